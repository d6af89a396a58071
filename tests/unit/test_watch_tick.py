"""Whole ticks through the post-promotion watch against in-memory fakes of the ports (the real-server
version is tests/e2e/test_watch_e2e.py): the judge keeps reading in the watch, a late regression rolls
back through the router, and the notifier gets the rollback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lossgate.core.evidence import ArmStats
from lossgate.core.notify import Envelope, NoticeEvent
from lossgate.model import ModelRolloutStatus, Phase
from lossgate.reconcile.handlers import restore_baseline
from tests.unit.reconcile_fakes import FakeClock, FakeDeps, FakeMetrics, FakeObjects, FakeRouter, rollout_body
from tests.unit.test_tick_wiring import INTERVAL, RecordingMetrics, run_ticks, start

WATCHED = {
    "steps": [{"weight": 10}, {"weight": 100}],
    "stepDefaults.minSamples": 100,
    "analysis.loss.minSamplesBeforePromotion": 0,
    "analysis.loss.minSamplesBeforeRollback": 500,
    "postPromotion": {"holdbackWeight": 5, "window": "1h"},
}


class Sent:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def submit(self, env: Envelope) -> None:
        self.envelopes.append(env)


def watching(over: dict[str, Any] | None = None) -> tuple[Any, Any, RecordingMetrics, Sent]:
    metrics = RecordingMetrics()  # both arms at 0.4 nats
    deps, objects = start({**WATCHED, **(over or {})}, metrics)
    sent = Sent()
    deps.notifier = sent  # type: ignore[assignment]
    status = run_ticks(deps, objects, 4)  # start, judge, promote
    assert status.phase is Phase.WATCHING, status.message
    return deps, objects, metrics, sent


def test_the_judge_keeps_reading_in_the_watch_at_the_holdback_split() -> None:
    # Given a rollout promoted into the watch (95/5)
    deps, objects, metrics, _ = watching()
    router = deps.router(None)
    assert isinstance(router, FakeRouter)
    assert router.canary == 95
    reads = len(metrics.loss_reads)
    # When more intervals close
    status = run_ticks(deps, objects, 3)
    # Then the judge reads them, continuing its state (one new read per tick), with the new split
    assert len(metrics.loss_reads) == reads + 3
    assert status.judge_state is not None
    assert status.judge_state.looks >= 5
    assert [s.weight for s in status.step_starts] == [10, 95]
    assert status.phase is Phase.WATCHING
    assert status.canary_weight == 95


def test_a_late_regression_rolls_back_through_the_router_and_notifies() -> None:
    # Given a rollout in the watch
    deps, objects, metrics, sent = watching()
    # When the labels arriving in the watch show the canary much worse (1.2 vs 0.4 nats)
    metrics.canary = ArmStats(500, 500 * 1.2, 500 * (1.2**2 + 0.05))
    status: ModelRolloutStatus = run_ticks(deps, objects, 6)
    # Then it rolled back: the router sends everything to the baseline
    assert status.phase is Phase.ROLLED_BACK, status.message
    router = deps.router(None)
    assert isinstance(router, FakeRouter)
    assert router.canary == 0
    assert status.analysis is not None
    assert status.analysis.verdict == "Regression"
    # And the notifier got the promotion, then the rollback, with the watch's reason
    events = [(e.notice.event, e.notice.entry.reason) for e in sent.envelopes]
    assert (NoticeEvent.PROMOTE, "PromotedNoRegression") in events
    assert events[-1] == (NoticeEvent.ROLLBACK, "PostPromotionRegression")
    # And a finished rollout reads nothing more
    reads = len(metrics.loss_reads)
    run_ticks(deps, objects, 2)
    assert len(metrics.loss_reads) == reads


def test_without_a_holdback_the_watch_sums_the_promoted_models_labels_once() -> None:
    # Given holdbackWeight 0: the canary gets 100% in the watch
    deps, objects, metrics, _ = watching({"postPromotion": {"holdbackWeight": 0, "window": "1h"}})
    router = deps.router(None)
    assert isinstance(router, FakeRouter)
    assert router.canary == 100
    # When three more intervals close (500 canary labels each at 0.4 nats)
    status = run_ticks(deps, objects, 3)
    # Then the watch counted each interval that closed after the promotion exactly once
    w = status.watch
    assert w is not None
    assert w.mode == "WarnOnly"
    assert w.n % 500 == 0
    assert 500 <= w.n <= 2000
    assert w.mean == 0.4
    assert w.finding == ""
    counted = w.n
    status = run_ticks(deps, objects, 1)
    assert status.watch is not None
    assert status.watch.n == counted + 500
    # When the promoted model's labels turn much worse, Then it warns and keeps 100% canary
    metrics.canary = ArmStats(500, 500 * 1.2, 500 * (1.2**2 + 0.05))
    status = run_ticks(deps, objects, 6)
    assert (status.phase, status.canary_weight) == (Phase.WATCHING, 100)
    assert status.watch is not None
    assert status.watch.finding == "Warned"
    assert router.canary == 100


def test_the_window_passing_removes_the_holdback() -> None:
    # Given a rollout in a 1h watch with equal arms
    deps, objects, _, _ = watching()
    # When the window passes
    status = run_ticks(deps, objects, round(3600 / INTERVAL) + 2)
    # Then 100% canary and Promoted; the judge's state is dropped
    assert (status.phase, status.canary_weight) == (Phase.PROMOTED, 100)
    router = deps.router(None)
    assert isinstance(router, FakeRouter)
    assert router.canary == 100
    assert status.judge_state is None


def test_deleting_a_rollout_in_the_watch_gives_the_promoted_canary_all_the_traffic() -> None:
    # Given rollouts deleted while watching (95/5) and while progressing (10/90)
    for phase, before, after in (("Watching", 95, 100), ("Progressing", 10, 0)):
        body = rollout_body(status={"phase": phase, "canaryWeight": before})
        router = FakeRouter(canary=before)
        deps = FakeDeps(FakeObjects(body=body), router, FakeMetrics(), FakeClock())
        # When the finalizer runs
        asyncio.run(restore_baseline(body=body, memo={"deps": deps}, logger=logging.getLogger("t")))
        # Then the watch's holdback goes to the canary; a ramp's traffic back to the baseline
        assert router.canary == after, phase
