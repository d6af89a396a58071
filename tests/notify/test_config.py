"""The sinks file: URLs by reference (environment from a Secret, or a mounted file), and a bad file
stops the operator at startup naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossgate.adapters.notify import load_settings
from lossgate.core.notify import NoticeEvent, Severity


def test_urls_by_reference_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Slack URL in the environment (the chart fills it from a Secret) and one in a mounted file
    monkeypatch.setenv("SLACK_URL", "https://hooks.example.invalid/T/B/x")
    (tmp_path / "ce-url").write_text("http://broker.example.invalid/ns/default\n")
    cfg = tmp_path / "n.yaml"
    cfg.write_text(
        "sinks:\n"
        "- {name: slack, type: slack, urlFrom: {env: SLACK_URL}, minSeverity: warning}\n"
        f"- {{name: bus, type: cloudevents, urlFrom: {{file: {tmp_path / 'ce-url'}}}, rollouts: all}}\n"
    )
    # When the operator loads it
    s = load_settings(str(cfg))
    # Then each URL is resolved, and the defaults are every event, info and up, subscribed rollouts only
    slack, bus = s.sinks
    assert slack.resolve_url() == "https://hooks.example.invalid/T/B/x"
    assert bus.resolve_url() == "http://broker.example.invalid/ns/default"
    assert bus.events == tuple(NoticeEvent)
    assert (slack.min_severity, slack.rollouts, bus.min_severity) == (
        Severity.WARNING,
        "subscribed",
        Severity.INFO,
    )
    assert (s.retry.attempts, s.retry.backoff(1), s.retry.backoff(3), s.retry.backoff(20)) == (
        6,
        1.0,
        4.0,
        60.0,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sinks: [{name: a, type: slack}]", "exactly one of url or urlFrom"),
        ("sinks: [{name: a, type: pager, url: 'http://x'}]", "type"),
        ("sinks: [{name: a, type: webhook, url: 'http://x', events: [deploy]}]", "events"),
        ("sinks: [{name: a, type: webhook, urlFrom: {env: NOPE_UNSET}}]", "NOPE_UNSET is unset"),
        ("sinks: [{name: a, type: webhook, url: 'ftp://x'}]", "http:// or https://"),
    ],
)
def test_a_bad_file_stops_startup_naming_the_field(tmp_path: Path, text: str, says: str) -> None:
    # Given a sinks file with one mistake
    cfg = tmp_path / "n.yaml"
    cfg.write_text(text)
    # When the operator loads it, then it stops with the file, the problem and where to read more
    with pytest.raises(SystemExit) as err:
        load_settings(str(cfg))
    assert str(cfg) in str(err.value)
    assert says in str(err.value)
    assert "docs/notifications.md" in str(err.value)
