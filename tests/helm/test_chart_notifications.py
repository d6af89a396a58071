"""The chart's notification values: a ConfigMap the operator's own loader accepts, URLs from Secrets
by reference (never written into the ConfigMap), the pod rolled when the sinks change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helm_python.errors import HelmValuesError

from lossgate.adapters.notify import load_settings
from tests.helm.chart import by_kind, lint_report, one, render, validate

SINKS: dict[str, Any] = {
    "notifications": {
        "sinks": [
            {
                "name": "oncall-slack",
                "type": "slack",
                "urlSecretRef": {"name": "slack-webhook", "key": "url"},
                "events": ["rollback", "block", "hold"],
                "minSeverity": "warning",
            },
            {
                "name": "audit",
                "type": "cloudevents",
                "mode": "structured",
                "url": "http://broker/ml",
                "rollouts": "all",
            },
        ]
    },
    "networkPolicy": {"enabled": True},
}


def test_sinks_render_to_a_file_the_operator_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two sinks, one whose URL is in a Secret
    docs = render(SINKS)
    # Then a ConfigMap holds the file, with the Secret's URL replaced by an environment reference
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-notifications"))
    text = cm["data"]["notifications.yaml"]
    assert "slack-webhook" not in text
    # And the Deployment fills that variable from the Secret, mounts the file and points at it
    pod = one(docs, "Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LOSSGATE_NOTIFY_URL_0"]["valueFrom"] == {
        "secretKeyRef": {"name": "slack-webhook", "key": "url"}
    }
    path = env["LOSSGATE_NOTIFICATIONS_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "notifications")
    assert path == mount["mountPath"] + "/notifications.yaml"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "notifications")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert pod["metadata"]["annotations"]["checksum/notifications"]
    # And the operator's loader accepts the rendered file as it would in the pod
    monkeypatch.setenv("LOSSGATE_NOTIFY_URL_0", "https://hooks.example.invalid/T/B/x")
    (tmp_path / "n.yaml").write_text(text)
    settings = load_settings(str(tmp_path / "n.yaml"))
    slack, audit = settings.sinks
    assert (slack.name, slack.resolve_url(), slack.min_severity.value) == (
        "oncall-slack",
        "https://hooks.example.invalid/T/B/x",
        "warning",
    )
    assert (audit.mode, audit.rollouts) == ("structured", "all")
    assert (settings.retry.attempts, settings.queue_size) == (6, 1000)
    # And the network policy lets the operator reach the sinks
    egress = one(docs, "NetworkPolicy")["spec"]["egress"]
    assert {"port": 443, "protocol": "TCP"} in egress[-1]["ports"]
    # And strict lint has no finding
    report = lint_report(SINKS)
    assert (report["errors"], report["messages"]) == ([], []), report


def test_a_changed_sink_rolls_the_pod_and_none_renders_nothing() -> None:
    # Given the sinks, and the same with another event filter
    other = {"notifications": {"sinks": [{**SINKS["notifications"]["sinks"][0], "events": ["rollback"]}]}}
    a = one(render(SINKS), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    b = one(render(other), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    # Then the checksum differs (the operator reads the file at startup)
    assert a["checksum/notifications"] != b["checksum/notifications"]
    # And without sinks there is no ConfigMap, variable or mount
    docs = render({})
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-notifications")]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "LOSSGATE_NOTIFICATIONS_FILE" not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize(
    "sink",
    [
        {"name": "a", "type": "slack"},  # no URL
        {"name": "a", "type": "slack", "url": "http://x", "urlSecretRef": {"name": "s", "key": "k"}},  # two
        {"name": "a", "type": "pager", "url": "http://x"},
        {"name": "A_b", "type": "webhook", "url": "http://x"},
    ],
)
def test_schema_refuses_bad_sinks(sink: dict[str, Any]) -> None:
    with pytest.raises(HelmValuesError):
        validate({"notifications": {"sinks": [sink]}})
