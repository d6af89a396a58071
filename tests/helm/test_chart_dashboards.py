"""The chart ships the dashboards as ConfigMaps labelled for the Grafana sidecar, byte for byte the
JSON `make dashboards` wrote."""

from __future__ import annotations

import json

from tests.helm.chart import ROOT, by_kind, lint_report, render

VALUES = {"dashboards": {"enabled": True, "namespace": "monitoring"}}


def test_dashboards_ship_as_labelled_configmaps() -> None:
    # Given the dashboards enabled, into the monitoring namespace
    docs = render(VALUES)
    maps = {
        d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap") if "-dashboard-" in d["metadata"]["name"]
    }
    # Then one ConfigMap per dashboard, labelled and annotated for the sidecar, in that namespace
    assert sorted(maps) == [f"lossgate-dashboard-{n}" for n in ("debug", "executive", "oncall")]
    for name, cm in maps.items():
        short = name.removeprefix("lossgate-dashboard-")
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "lossgate"}
        # And the data is the generated dashboard, unchanged
        (text,) = cm["data"].values()
        assert json.loads(text) == json.loads((ROOT / "dashboards" / f"{short}.json").read_text())
    # And strict lint has no finding; by default nothing is rendered
    report = lint_report(VALUES)
    assert (report["errors"], report["messages"]) == ([], []), report
    assert not [d for d in by_kind(render({}), "ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
