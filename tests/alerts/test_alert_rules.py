"""The alert rules and the SLO example: promtool checks them and runs their unit tests (each alert
fires and resolves on synthetic series), every alert follows the conventions and has its runbook,
and the chart ships them as a PrometheusRule the real API server accepts with the real CRD."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import render
from tests.infra.kube_fixtures import Kube

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "helm" / "lossgate" / "files" / "alerts.yaml"
SLO = ROOT / "examples" / "slo" / "catastrophic-tail-slo.yaml"
HERE = Path(__file__).resolve().parent
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is missing: run make deps"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=HERE)


def _alerts(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize(("rules", "count"), [(ALERTS, 7), (SLO, 6)])
def test_promtool_accepts_the_rules(rules: Path, count: int) -> None:
    # Given a rule file; When promtool checks it; Then every rule parses
    out = _promtool("check", "rules", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {count} rules found" in out.stdout


@pytest.mark.parametrize(("rules", "tests"), [(ALERTS, "lossgate.test.yaml"), (SLO, "slo.test.yaml")])
def test_every_alert_fires_and_resolves_in_promtools_unit_tests(rules: Path, tests: str) -> None:
    # Given the unit tests of a rule file
    spec = yaml.safe_load((HERE / tests).read_text())
    cases = [c for t in spec["tests"] for c in t["alert_rule_test"]]
    # Then each alert is tested firing (some expected alert) and resolved (none expected later)
    for name in {a["alert"] for a in _alerts(rules)}:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        fired = max(_minutes(c["eval_time"]) for c in mine if c["exp_alerts"])
        assert any(not c["exp_alerts"] and _minutes(c["eval_time"]) > fired for c in mine), (
            f"{name} never resolves"
        )
    # When promtool runs them; Then they pass
    out = _promtool("test", "rules", tests)
    assert out.returncode == 0, out.stdout + out.stderr


def _minutes(t: str) -> int:
    assert t.endswith("m"), t
    return int(t[:-1])


def test_every_alert_follows_the_conventions_and_has_a_runbook_section() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)}
    for rule in _alerts(ALERTS) + _alerts(SLO):
        name, ann = rule["alert"], rule["annotations"]
        # CamelCase names, a severity, a summary, a description and a runbook link
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert ann["summary"], name
        assert ann["description"], name
        # And the link points at that alert's section of docs/runbooks.md
        base, anchor = ann["runbook_url"].split("#")
        assert base == "RUNBOOK_BASE"
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_the_chart_renders_the_rules_with_its_runbook_links_and_operator_job() -> None:
    # Given alerts enabled with a runbook base and labels
    values = {
        "alerts": {
            "enabled": True,
            "runbookBaseUrl": "https://wiki.example/lossgate",
            "labels": {"release": "kps"},
        }
    }
    # When the chart is rendered
    rules = [d for d in render(values) if d["kind"] == "PrometheusRule"]
    # Then it holds the rule file's groups, with the links and the operator's scrape job filled in
    assert len(rules) == 1
    rule = rules[0]
    assert rule["metadata"]["labels"]["release"] == "kps"
    shipped = yaml.safe_load(ALERTS.read_text())["groups"]
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in shipped]
    text = json.dumps(rule["spec"])
    assert "RUNBOOK_BASE" not in text
    assert "https://wiki.example/lossgate#lossgateoperatordown" in text
    assert 'up{job=\\"lossgate-metrics\\"}' in text
    # And nothing is rendered by default
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_the_api_server_accepts_the_rule_and_monitors_with_the_prometheus_operators_crds(
    kube: Kube, namespace: str
) -> None:
    # Given the chart's PrometheusRule, ServiceMonitor and PodMonitor, placed in a fresh namespace
    values = {"alerts": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True},
                                                     "podMonitor": {"enabled": True}}}  # fmt: skip
    docs = [d for d in render(values, namespace=namespace)
            if d["kind"] in {"PrometheusRule", "ServiceMonitor", "PodMonitor"}]  # fmt: skip
    assert {d["kind"] for d in docs} == {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
    # When they are applied server-side to the real API server with the Prometheus Operator's CRDs
    out = kube.kubectl("apply", "--server-side", "--field-manager=alerts-test", "-f", "-",
                       input="\n---\n".join(json.dumps(d) for d in docs))  # fmt: skip
    # Then each is validated against its CRD's schema and stored
    assert out.returncode == 0, out.stderr
    for d in docs:
        assert (
            f"{d['kind'].lower()}.monitoring.coreos.com/{d['metadata']['name']} serverside-applied"
            in out.stdout
        )
