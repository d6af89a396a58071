"""The status write policy: a tick whose outcome equals the status it read sends no PATCH; the
analysis.updatedAt stamp alone is refreshed at most every STATUS_REFRESH."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from lossgate.core.actions import EmitEvent
from lossgate.model import ModelRolloutStatus
from lossgate.reconcile.rollout import tick
from lossgate.reconcile.status_io import STATUS_REFRESH, needs_write
from tests.unit.reconcile_fakes import (
    T0,
    FakeClock,
    FakeDeps,
    FakeMetrics,
    FakeObjects,
    FakeRouter,
    interval,
    rollout_body,
)

TWO_INTERVALS = [interval(T0), interval(T0 + timedelta(seconds=30))]


def _started(deps: FakeDeps, objects: FakeObjects, clock: FakeClock, events: list[EmitEvent]) -> None:
    """Start the rollout and let its two intervals close: two ticks, two PATCHes."""
    asyncio.run(tick(deps, objects.body, events.append))  # Pending -> step 1 at 10%
    clock.advance(70)
    asyncio.run(tick(deps, objects.body, events.append))  # the two intervals' evidence


def test_a_steady_tick_with_unchanged_evidence_sends_no_patch() -> None:
    # Given a rollout on step 1 whose Prometheus has two closed intervals and nothing newer
    clock, objects, router = FakeClock(), FakeObjects(body=rollout_body()), FakeRouter()
    metrics = FakeMetrics(TWO_INTERVALS)
    deps = FakeDeps(objects, router, metrics, clock)
    events: list[EmitEvent] = []
    _started(deps, objects, clock, events)
    assert len(objects.status_patches) == 2
    assert objects.body["status"]["phase"] == "Progressing"
    assert objects.body["status"]["analysis"]["canary"]["n"] == 200  # the first after a change is dropped
    assert objects.body["status"]["analysis"]["samplesInStep"] == 400
    stamped = objects.body["status"]["analysis"]["updatedAt"]
    reads, sets = metrics.reads, router.sets
    # When it ticks again, every interval, for four and a half minutes, with no new evidence
    for _ in range(9):
        clock.advance(30)
        requeue = asyncio.run(tick(deps, objects.body, events.append))
        assert requeue == timedelta(seconds=30)
    # Then Prometheus and the router were read every tick, but not one PATCH and no new Event went out
    assert metrics.reads > reads
    assert router.sets == sets
    assert len(objects.status_patches) == 2
    assert objects.body["status"]["analysis"]["updatedAt"] == stamped
    skipped = deps.telemetry.status_writes.labels("skipped")._value.get()
    assert skipped == 9
    # And once analysis.updatedAt is STATUS_REFRESH old, one PATCH refreshes it
    clock.advance(30)
    asyncio.run(tick(deps, objects.body, events.append))
    assert len(objects.status_patches) == 3
    assert objects.body["status"]["analysis"]["updatedAt"] != stamped


def test_a_real_change_is_written_at_once() -> None:
    # Given the same steady rollout
    clock, objects, router = FakeClock(), FakeObjects(body=rollout_body()), FakeRouter()
    deps = FakeDeps(objects, router, FakeMetrics(TWO_INTERVALS), clock)
    events: list[EmitEvent] = []
    _started(deps, objects, clock, events)
    # When it is paused by annotation, a few seconds later
    objects.body["metadata"]["annotations"] = {"lossgate.io/pause": "true"}
    clock.advance(3)
    asyncio.run(tick(deps, objects.body, events.append))
    # Then that tick writes (phase Paused) and consumes the annotation
    assert len(objects.status_patches) == 3
    assert objects.body["status"]["phase"] == "Paused"
    assert objects.annotation_removals == [["lossgate.io/pause"]]


def test_needs_write_compares_through_the_model_and_ignores_only_the_stamp() -> None:
    # Given a status as read back from the API server (ints for whole floats, no null keys)
    wire = {
        "phase": "Progressing",
        "canaryWeight": 10,
        "analysis": {
            "verdict": "Undecided",
            "baseline": {"n": 200},
            "canary": {"n": 200, "mean": 0.4},
            "updatedAt": "2025-01-06T12:00:30Z",
        },
    }
    old = ModelRolloutStatus.model_validate(wire)
    later = old.analysis.model_copy(update={"updated_at": old.analysis.updated_at + timedelta(seconds=60)})
    # Then the same values computed in Python, stamped a minute later, need no write
    assert not needs_write(old, old.model_copy(update={"analysis": later}))
    # But any other field does, and so does a stamp STATUS_REFRESH old
    assert needs_write(old, old.model_copy(update={"canary_weight": 25}))
    stale = old.analysis.model_copy(update={"updated_at": old.analysis.updated_at + STATUS_REFRESH})
    assert needs_write(old, old.model_copy(update={"analysis": stale}))
