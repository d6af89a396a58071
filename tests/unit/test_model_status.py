"""Status: conditions (lastTransitionTime only on flips), bounded history, wire round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lossgate.model import (
    HISTORY_LIMIT,
    ConditionStatus,
    ConditionType,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
    Reason,
    get_condition,
    set_condition,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_transition_time_changes_only_when_the_status_flips() -> None:
    c = set_condition([], ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE, Reason.METRICS_OK, "ok", T0)
    c = set_condition(
        c, ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE, "Other", "still ok", T0 + timedelta(1)
    )
    got = get_condition(c, ConditionType.METRICS_AVAILABLE)
    assert got is not None
    assert got.last_transition_time == T0
    assert (got.reason, got.message) == ("Other", "still ok")
    c = set_condition(
        c, ConditionType.METRICS_AVAILABLE, ConditionStatus.FALSE, "Down", "x", T0 + timedelta(2)
    )
    got = get_condition(c, ConditionType.METRICS_AVAILABLE)
    assert got is not None
    assert got.last_transition_time == T0 + timedelta(2)


def test_set_condition_keeps_order_and_others() -> None:
    c = set_condition([], "A", ConditionStatus.TRUE, "R", "", T0)
    c = set_condition(c, "B", ConditionStatus.TRUE, "R", "", T0)
    c = set_condition(c, "A", ConditionStatus.FALSE, "R", "", T0)
    assert [x.type for x in c] == ["A", "B"]
    assert get_condition(c, "C") is None


def test_reasons_are_camel_case_constants() -> None:
    for r in Reason:
        assert r.value[0].isupper(), r
        assert r.value.isalnum(), r


def test_history_is_bounded_on_read_and_write() -> None:
    entries = [
        HistoryEntry(
            time=T0, decision="Hold", reason="Paused", phase=Phase.PAUSED, step_index=0, canary_weight=5
        )
        for _ in range(HISTORY_LIMIT + 5)
    ]
    s = ModelRolloutStatus.model_validate({"history": [e.to_wire() for e in entries]})
    assert len(s.history) == HISTORY_LIMIT
    assert len(s.with_history(entries[0])) == HISTORY_LIMIT


def test_status_wire_form() -> None:
    s = ModelRolloutStatus(
        phase=Phase.PAUSED,
        step_index=1,
        canary_weight=25,
        step_started_at=T0,
        paused_at=T0 + timedelta(minutes=3),
        step_paused=timedelta(minutes=1),
        conditions=set_condition([], ConditionType.PROGRESSING, ConditionStatus.FALSE, Reason.PAUSED, "", T0),
    )
    wire = s.to_wire()
    assert wire["stepPaused"] == "1m"
    assert wire["pausedAt"] == "2025-01-01T00:03:00Z"
    assert wire["conditions"][0] == {
        "type": "Progressing",
        "status": "False",
        "reason": "Paused",
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    assert "analysis" not in wire  # no nulls on the wire
    assert ModelRolloutStatus.model_validate(wire) == s
    assert s.active_in_step(T0 + timedelta(minutes=10)) == timedelta(minutes=2)
    assert s.terminal is False
    assert s.started is False
