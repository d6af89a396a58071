"""The mechanics of one decide() tick: working state, history, events, weights, requeue, new status.

The rules themselves live in lossgate.core.machine; this module only records what they decided.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from lossgate.core import summary as fmt
from lossgate.core.actions import Action, EmitEvent, EventType, SetMirror, SetWeight
from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.label_checks import delay_warning
from lossgate.core.notify import Notice, notice_for
from lossgate.core.observation import Observation
from lossgate.core.status_conditions import TickFacts, conditions_after
from lossgate.core.verdicts import HealthVerdict
from lossgate.model.analysis import UnavailableAction
from lossgate.model.conditions import ConditionStatus, Reason
from lossgate.model.durations import format_timestamp
from lossgate.model.spec import ModelRolloutSpec
from lossgate.model.status import (
    HISTORY_LIMIT,
    STEP_STARTS_LIMIT,
    TERMINAL_PHASES,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
    StepStart,
    WatchStatus,
)

TERMINAL_REQUEUE = timedelta(minutes=5)
MIN_REQUEUE = timedelta(seconds=1)
RECORDED_ALWAYS = frozenset(
    {
        DecisionKind.START,
        DecisionKind.ADVANCE,
        DecisionKind.PROMOTE,
        DecisionKind.ROLLBACK,
        DecisionKind.BLOCK,
        DecisionKind.RESTART,
    }
)


@dataclass
class Working:
    """The status fields a tick may change (copied into the new status at the end)."""

    phase: Phase
    observed_generation: int | None
    step_index: int
    canary_weight: int
    baseline_version: str | None
    canary_version: str | None
    started_at: datetime | None
    step_started_at: datetime | None
    paused_at: datetime | None
    step_paused: timedelta
    metrics_unavailable_since: datetime | None
    manually_paused: bool
    canary_scaled_down: bool
    mirror_percent: int
    watch: WatchStatus | None

    def active_in_step(self, now: datetime) -> timedelta:
        """Time in the current step, not counting time paused."""
        if self.step_started_at is None:
            return timedelta(0)
        paused = self.step_paused + (now - self.paused_at if self.paused_at is not None else timedelta(0))
        return max(timedelta(0), now - self.step_started_at - paused)


class TickBase:
    def __init__(
        self, spec: ModelRolloutSpec, prev: ModelRolloutStatus, obs: Observation, now: datetime
    ) -> None:
        self.spec, self.prev, self.obs, self.now = spec, prev, obs, now
        self.m = Working(**{f.name: getattr(prev, f.name) for f in fields(Working)})
        self.actions: list[Action] = []
        self.events: list[EmitEvent] = []
        self.notices: list[Notice] = []
        self.history = list(prev.history)
        self.kind = DecisionKind.WAIT
        self.reason = str(Reason.STEP_IN_PROGRESS)
        self.message = ""
        self.fresh = False
        self.restarted = False
        self.loss = obs.loss if obs.metrics_available else None
        self.paired = obs.paired if obs.metrics_available else None
        self.health: HealthVerdict | None = None  # None: not gated
        if spec.health_gated:
            self.health = obs.health.verdict if obs.health is not None else HealthVerdict.UNKNOWN
        self.health_unknown_blocks = (
            self.health is HealthVerdict.UNKNOWN and spec.analysis.gradient_health.require_metrics
        )
        self.paused = spec.paused or prev.manually_paused
        # The PostPromotionWatch condition (status, reason, message); None: left as it is (core/watch.py)
        self.watch_condition: tuple[ConditionStatus, str, str] | None = None

    # ------------------------------------------------------------------ outcome
    def set(self, kind: DecisionKind, reason: Reason, message: str) -> None:
        self.kind, self.reason, self.message = kind, str(reason), message

    def event(self, type_: EventType, reason: Reason, message: str) -> None:
        self.events.append(EmitEvent(type_, str(reason), message))

    def record(self, kind: DecisionKind, reason: str, message: str) -> None:
        """Append a history entry and the matching Kubernetes Event."""
        m, loss = self.m, self.loss
        entry = HistoryEntry(
            time=self.now,
            decision=kind.value,
            reason=reason,
            phase=m.phase,
            step_index=m.step_index,
            canary_weight=m.canary_weight,
            health=self.health.value if self.health is not None else None,
            message=message,
        )
        if loss is not None:
            entry = entry.model_copy(
                update={
                    "verdict": loss.verdict.value,
                    "delta": fmt.sig(loss.delta),
                    "cs_low": fmt.sig(loss.cs_low),
                    "cs_high": fmt.sig(loss.cs_high),
                    "n_baseline": loss.n_baseline,
                    "n_canary": loss.n_canary,
                }
            )
        self.history.append(entry)
        notice = notice_for(kind, entry)
        if notice is not None:
            self.notices.append(notice)
        warn = kind in (DecisionKind.ROLLBACK, DecisionKind.BLOCK) or (
            kind is DecisionKind.HOLD and reason != Reason.PAUSED
        )
        self.event(EventType.WARNING if warn else EventType.NORMAL, Reason(reason), message)

    def _should_record(self) -> bool:
        if self.kind in RECORDED_ALWAYS:
            return True
        if self.kind is DecisionKind.IDLE:
            return False
        last = self.history[-1] if self.history else None
        if self.kind is DecisionKind.WAIT:  # only the end of a hold is news
            return last is not None and last.decision == DecisionKind.HOLD.value
        if last is None:
            return True
        return (last.decision, last.reason, last.step_index) != (
            self.kind.value,
            self.reason,
            self.m.step_index,
        )

    # ------------------------------------------------------------------ bookkeeping
    def pause_clock(self) -> None:
        """Start/stop the pause clock so paused time does not count towards step durations."""
        m = self.m
        if m.phase is Phase.PAUSED and m.started_at is not None:
            if m.paused_at is None:
                m.paused_at = self.now
        elif m.paused_at is not None:
            if m.phase not in TERMINAL_PHASES:
                m.step_paused += self.now - m.paused_at
            m.paused_at = None

    def repair_weights(self) -> None:
        """SetWeight when the desired weight changed, the router drifted, or its weight is unknown."""
        desired, before, actual = self.m.canary_weight, self.prev.canary_weight, self.obs.actual_weights
        if actual is not None and actual.canary != before:
            self.event(
                EventType.WARNING,
                Reason.WEIGHT_DRIFT,
                f"router has canary at {actual.canary}%, lossgate set {before}%: writing {desired}%",
            )
        if actual is None or actual.canary != desired or desired != before:
            self.actions.insert(0, SetWeight(desired))

    def repair_mirror(self) -> None:
        """The mirror is on only while the rollout runs its shadow step; SetMirror when that changes
        or the router reports another percent. Rollouts without a shadow step never touch it."""
        m, shadow = self.m, self.spec.shadow
        running = m.started_at is not None and m.phase in (Phase.PROGRESSING, Phase.PAUSED)
        in_shadow = shadow is not None and running and self.spec.in_shadow(m.step_index)
        m.mirror_percent = shadow.mirror_percent if shadow is not None and in_shadow else 0
        actual, before = self.obs.actual_mirror, self.prev.mirror_percent
        if shadow is None and before == 0 and m.mirror_percent == 0:
            return
        if actual is not None and actual != before:
            text = (
                f"router mirrors {actual}% to the canary, lossgate set {before}%: writing {m.mirror_percent}%"
            )
            self.event(EventType.WARNING, Reason.MIRROR_DRIFT, text)
        if actual is None or actual != m.mirror_percent or m.mirror_percent != before:
            self.actions.append(SetMirror(m.mirror_percent))

    def finish(self) -> Decision:
        if self._should_record():
            self.record(self.kind, self.reason, self.message)
        status = self.prev.model_copy(update=self._status_update())
        return Decision(
            status=status,
            actions=(*self.actions, *self.events),
            requeue_after=self._requeue(),
            kind=self.kind,
            reason=self.reason,
            notices=tuple(self.notices),
        )

    def _status_update(self) -> dict[str, Any]:
        m, spec, now, obs = self.m, self.spec, self.now, self.obs
        update: dict[str, Any] = {f.name: getattr(m, f.name) for f in fields(Working)}
        started = m.started_at is not None
        update["current_step"] = f"{m.step_index + 1 if started else 0}/{len(spec.steps)}"
        update["step_starts"] = self._step_starts()
        update["message"] = self.message
        active = self.kind is not DecisionKind.IDLE
        analysis = None if self.restarted else self.prev.analysis
        if self.loss is not None and active:
            policy = spec.analysis.loss.promotion_policy.value
            analysis = fmt.analysis_status(self.loss, obs.canary_samples_in_step, policy, now)
        update["analysis"] = analysis
        paired = None if self.restarted else self.prev.paired
        if self.paired is not None and active:
            paired = fmt.paired_status(self.paired, m.mirror_percent, now)
        update["paired"] = paired
        health = None if self.restarted else self.prev.training_health
        if obs.health is not None and active:
            health = fmt.training_status(obs.health, now)
        update["training_health"] = health
        metrics_message = obs.metrics_problem or "no data"
        if m.metrics_unavailable_since is not None and not obs.metrics_available:
            metrics_message += f" (since {format_timestamp(m.metrics_unavailable_since)})"
        facts = TickFacts(
            phase=m.phase,
            kind=self.kind,
            reason=self.reason,
            message=self.message,
            reset=self.fresh or self.restarted,
            metrics_available=obs.metrics_available,
            metrics_message=metrics_message,
            health=self.health,
            health_message=fmt.health_line(obs.health),
            now=now,
            generation=obs.generation,
            labels_timely=self._labels_timely(),
            watch=self.watch_condition,
        )
        update["conditions"] = conditions_after(self.prev.conditions, facts)
        update["history"] = self.history[-HISTORY_LIMIT:]
        return update

    def _labels_timely(self) -> tuple[bool, str, str] | None:
        """The LabelsTimely condition while progressing with label evidence (None: left as it is)."""
        labels, m = self.obs.labels, self.m
        if labels is None or m.phase is not Phase.PROGRESSING or labels.delay_p90_s is None:
            return None
        min_duration = self.spec.quota(m.step_index).min_duration.total_seconds()
        warning = delay_warning(min_duration, labels.delay_p90_s, m.step_index + 1)
        if warning is not None:
            return False, str(Reason.LABEL_DELAY_EXCEEDS_STEP), warning
        p90 = fmt.dur(timedelta(seconds=labels.delay_p90_s))
        return (
            True,
            str(Reason.LABEL_DELAY_WITHIN_STEP),
            f"p90 label delay {p90} is within the step's minDuration",
        )

    def _step_starts(self) -> list[StepStart]:
        """The weight timeline since the rollout started: one entry per new step start (reset on restart)."""
        m = self.m
        if m.started_at is None or self.restarted:
            return []
        starts = list(self.prev.step_starts)
        if m.step_started_at is not None and (not starts or starts[-1].at != m.step_started_at):
            starts.append(StepStart(at=m.step_started_at, weight=m.canary_weight))
        return starts[-STEP_STARTS_LIMIT:]

    def _requeue(self) -> timedelta:
        """The analysis interval, or sooner when a step or metrics deadline falls before it."""
        m, spec, now = self.m, self.spec, self.now
        if m.phase in TERMINAL_PHASES:
            return TERMINAL_REQUEUE
        wait = spec.analysis.interval
        candidates: list[timedelta] = []
        if m.phase is Phase.WATCHING and m.watch is not None:
            candidates.append(m.watch.ends_at - now)
        if m.phase is Phase.PROGRESSING and m.step_started_at is not None:
            q = spec.quota(m.step_index)
            active = m.active_in_step(now)
            candidates.append(q.min_duration - active)
            if q.max_duration is not None:
                candidates.append(q.max_duration - active)
        policy = spec.analysis.on_metrics_unavailable
        since = m.metrics_unavailable_since
        if since is not None and m.started_at is not None and policy.action is UnavailableAction.ROLLBACK:
            candidates.append(since + policy.after - now)
        for c in candidates:
            if timedelta(0) < c < wait:
                wait = c
        return max(wait, MIN_REQUEUE)
