"""A rollout backtest: the operator's own tick (judge_tick, then decide()) run over recorded loss
intervals on a virtual clock. Pure, no I/O.

Each tick sees exactly what the operator's tick would have read at that moment: the intervals of the
analysis grid (from the rollout's start) that closed at least `scrape_lag` before it, judged by the
running fold with the simulated weight timeline as strata. The clock moves as the operator's daemon
does: to the next tick after decide()'s requeue_after (the analysis interval, or sooner when a step's
minDuration or maxDuration falls due), and also at `wakeups` (moments the operator was woken, such as
its recorded step starts). A shadow step is judged on `paired`, the paired intervals on the same grid
(none recorded: it waits at weight 0 as the operator would). What a backtest cannot replay: the
router (weights and the mirror are taken as applied),
the canary's readiness, label checks and the training run's health (the caller removes the gate).

Over an A/B history recorded at a fixed split (`recorded_split`), each interval is reweighted to the
simulated step's split by thinning one arm: the baseline when the step sends a larger share to the
canary than the recording did, else the canary. Thinning scales an arm's counts, sums and tail counts
by the same factor, so its mean and variance are kept and the judge sees fewer samples: its intervals
are wider than a real sub-sample's would be on average, never narrower (conservative).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from lossgate.core.decision import DecisionKind
from lossgate.core.evidence import ArmStats, IntervalStats, Weights
from lossgate.core.health import HealthConfig
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.machine import decide
from lossgate.core.paired import PairedStats
from lossgate.core.paired_step import PairedPlan, plan_paired_read
from lossgate.core.step import Gathered, judge_tick, plan_loss_read
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus

MOVES = frozenset({DecisionKind.START, DecisionKind.ADVANCE, DecisionKind.PROMOTE, DecisionKind.ROLLBACK})
MAX_TICKS = 100_000  # a guard: a week at 6 s per tick


@dataclass(frozen=True)
class Tick:
    """One simulated tick: what decide() concluded, with the judge's numbers it saw."""

    time: datetime
    kind: str
    reason: str
    phase: str
    step: int  # 1-based
    weight: int
    message: str
    verdict: str | None
    n_canary: float
    delta: float | None
    cs_low: float | None
    cs_high: float | None
    margin: float | None
    samples_in_step: float


@dataclass(frozen=True)
class Backtest:
    ticks: list[Tick]
    status: ModelRolloutStatus
    recorded_split: float | None = None

    @property
    def moves(self) -> list[Tick]:
        """The ticks that moved traffic: start, each advance, and the promotion or rollback."""
        return [t for t in self.ticks if t.kind in MOVES]

    @property
    def outcome(self) -> Tick | None:
        last = self.ticks[-1] if self.ticks else None
        return (
            last if last is not None and last.kind in (DecisionKind.PROMOTE, DecisionKind.ROLLBACK) else None
        )


def thin(arm: ArmStats, factor: float) -> ArmStats:
    """The arm's expected statistics after keeping each request with probability `factor`."""
    return ArmStats(n=arm.n * factor, sum=arm.sum * factor, sumsq=arm.sumsq * factor, tail=arm.tail * factor)


def reweighted(iv: IntervalStats, weight: int, recorded_split: float) -> IntervalStats:
    """The interval as the step's split would have seen it (module docstring): thin one arm so that
    canary : baseline = weight : (100 - weight). At 0 or 100 one arm is empty."""
    s, w = recorded_split, weight / 100.0
    if not 0 < s < 1:
        raise ValueError(f"recorded split must be in (0, 1), got {s!r}")
    if w <= 0:
        return replace(iv, canary=thin(iv.canary, 0.0))
    if w >= 1:
        return replace(iv, baseline=thin(iv.baseline, 0.0))
    want, have = w / (1 - w), s / (1 - s)
    if want >= have:  # more canary share than recorded: drop baseline requests
        return replace(iv, baseline=thin(iv.baseline, have / want))
    return replace(iv, canary=thin(iv.canary, want / have))


def backtest(
    spec: ModelRolloutSpec,
    config: JudgeConfig,
    intervals: list[IntervalStats],
    origin: datetime,
    end: datetime,
    *,
    scrape_lag: timedelta = timedelta(seconds=15),
    wakeups: tuple[datetime, ...] = (),
    recorded_split: float | None = None,
    health: HealthConfig | None = None,
    paired: list[PairedStats] | None = None,
) -> Backtest:
    """Run the rollout from `origin` (its start: the first tick starts step 1) until it finishes or the
    clock passes `end`. `intervals`: the loss intervals on the grid origin + k * analysis.interval."""
    health = health or HealthConfig()
    status, t, ticks = ModelRolloutStatus(), origin, []
    pending = sorted(w for w in wakeups if w > origin)
    by_start = sorted(intervals, key=lambda iv: iv.start)
    starts = [iv.start for iv in by_start]
    for _ in range(MAX_TICKS):
        if t > end:
            break
        plan = plan_loss_read(spec, status, config, "replay")
        new: list[IntervalStats] | None = None
        if plan is not None:
            seen = (t - scrape_lag).timestamp()
            first = bisect.bisect_left(starts, plan.start.timestamp() - 1e-6)
            new = [iv for iv in by_start[first:] if iv.end <= seen + 1e-6]
            if recorded_split is not None:
                new = [reweighted(iv, _weight_at(status, iv.start), recorded_split) for iv in new]
        pplan = plan_paired_read(spec, status, config, "replay")
        got = Gathered(generation=1, command=None, weights=Weights(100 - status.canary_weight,
                       status.canary_weight), loss=new,
                       paired=_paired_since(pplan, paired, origin, t - scrape_lag))  # fmt: skip
        judged = judge_tick(spec, status, plan, got, config, health, paired_plan=pplan)
        decision = decide(spec, status, judged.observation, t)
        status = decision.status
        keep = status.step_starts and not status.terminal and judged.judge_state is not None
        if keep and judged.judge_state is not None:
            same = judged.judge_state.origin_ms == round(status.step_starts[0].at.timestamp() * 1000)
            status = status.model_copy(update={"judge_state": judged.judge_state if same else None})
        else:
            status = status.model_copy(update={"judge_state": None})
        status = status.model_copy(update={"paired_state": None if status.terminal else judged.paired_state})
        ticks.append(_tick(t, decision.kind, decision.reason, status, judged.observation))
        if status.terminal:
            break
        nxt = t + decision.requeue_after
        while pending and pending[0] <= t:
            pending.pop(0)
        if pending and pending[0] < nxt:
            nxt = pending.pop(0)
        t = nxt
    return Backtest(ticks, status, recorded_split)


def _paired_since(
    plan: PairedPlan | None, paired: list[PairedStats] | None, origin: datetime, seen: datetime
) -> list[PairedStats] | None:
    """The recorded paired intervals from the paired plan's start that closed by `seen`."""
    if plan is None or paired is None:
        return None
    first = round((plan.start - origin) / timedelta(seconds=plan.interval_s))
    closed = math.floor((seen - origin) / timedelta(seconds=plan.interval_s) + 1e-9)
    return paired[first:closed] if closed > first else []


def _weight_at(status: ModelRolloutStatus, at: float) -> int:
    """The simulated canary weight in force at unix time `at` (the last step started by then)."""
    w = 0
    for s in status.step_starts:
        if s.at.timestamp() <= at + 1e-6:
            w = s.weight
    return w


def _tick(t: datetime, kind: DecisionKind, reason: str, st: ModelRolloutStatus, obs: object) -> Tick:
    a = st.analysis
    in_step = st.judge_state.canary_samples_in_step if st.judge_state is not None else 0.0
    return Tick(
        time=t.astimezone(UTC),
        kind=kind.value,
        reason=str(reason),
        phase=st.phase.value,
        step=st.step_index + 1,
        weight=st.canary_weight,
        message=st.message or "",
        verdict=a.verdict if a is not None else None,
        n_canary=a.canary.n if a is not None else 0.0,
        delta=a.delta if a is not None else None,
        cs_low=a.cs_low if a is not None else None,
        cs_high=a.cs_high if a is not None else None,
        margin=a.margin if a is not None else None,
        samples_in_step=in_step,
    )
