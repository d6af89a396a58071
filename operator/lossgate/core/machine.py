"""The rollout state machine: decide(spec, status, observation, now) -> Decision. Pure, no I/O.

The rules, in the order they are applied each tick (docs/api.md has the same table):

 1. Identity. A new (baseline, canary) version pair restarts from step 1 (any phase); a spec change
    (new generation) after RolledBack/Failed restarts; the `retry` command restarts RolledBack/Failed.
    A restart sets the weight to 0 and phase Pending; the next tick starts step 1 on fresh evidence.
 2. Terminal phases (Promoted, RolledBack, Failed) are absorbing: only the weight is kept in place.
    Watching (spec.postPromotion, after a promotion) follows core/watch.py.
 3. Not started: abort -> RolledBack; failing training health -> Failed (blocked, no traffic moved);
    promote -> Promoted; paused -> Paused; wait while training metrics are unknown, metrics are
    unavailable or the canary does not serve spec.canary.version yet; otherwise start step 1.
 4. Started: abort, failing training health, a catastrophic regression, a regression seen with at
    least minSamplesBeforeRollback canary samples, or metrics unavailable for
    onMetricsUnavailable.after (action Rollback) -> RolledBack at once, also while paused. Then
    promote -> Promoted; paused -> hold; metrics unavailable or canary not ready -> hold. Otherwise
    advance when the step's quotas (minSamples, minDuration; doubled while training health warns)
    are met and the verdict is NotWorse or Undecided; leaving the last step below 100 is the
    promotion and also needs minSamplesBeforePromotion canary samples and, under
    RequireNonInferiority, a NotWorse verdict. A step past its maxDuration follows
    stepDefaults.onMaxDuration (Rollback | Hold | Advance). A first shadow step is judged on paired
    evidence from mirrored requests at weight 0 (core/shadow.py).
 5. The router's actual weight is compared with the desired one every tick and repaired.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lossgate.core import summary as fmt
from lossgate.core.actions import EventType, ScaleCanary
from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.label_checks import coverage_imbalance
from lossgate.core.observation import ManualCommand, Observation
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.core.watch import WatchRules
from lossgate.model.analysis import PromotionPolicy, UnavailableAction
from lossgate.model.conditions import ConditionType, Reason, get_condition
from lossgate.model.spec import MaxDurationAction, ModelRolloutSpec
from lossgate.model.status import TERMINAL_PHASES, ModelRolloutStatus, Phase

RESTARTABLE = frozenset({Phase.ROLLED_BACK, Phase.FAILED})


def decide(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, observation: Observation, now: datetime
) -> Decision:
    """One reconcile tick. Pure: the same inputs always give the same Decision.

    `now` should be timezone-aware; a naive datetime is taken as UTC (status times are UTC).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return _Rules(spec, status, observation, now).run()


class _Rules(WatchRules):
    def run(self) -> Decision:
        self._identity()
        if self.restarted:  # a restart only resets traffic to the baseline; the next tick starts step 1
            self._command_on_restart()
        elif self.m.phase in TERMINAL_PHASES:
            self._idle()
        elif self.m.phase is Phase.WATCHING:
            self.watching()
        else:
            self._pause_command()
            if self.m.started_at is None:
                self._pending()
            else:
                self._progressing()
        self.pause_clock()
        self.repair_weights()
        self.repair_mirror()
        return self.finish()

    # ------------------------------------------------------------------ 1. identity
    def _identity(self) -> None:
        m, spec, prev, obs = self.m, self.spec, self.prev, self.obs
        pair = (spec.baseline.version, spec.canary.version)
        before = (prev.baseline_version, prev.canary_version)
        if before == (None, None):
            self.fresh = True
            m.baseline_version, m.canary_version = pair
        elif before != pair:
            change = f"{before[0]}/{before[1]} to {pair[0]}/{pair[1]} (baseline/canary)"
            self._restart(Reason.CANARY_VERSION_CHANGED, f"versions changed from {change}")
        elif prev.phase in RESTARTABLE and prev.observed_generation not in (None, obs.generation):
            self._restart(
                Reason.SPEC_CHANGED, f"spec changed (generation {obs.generation}) after {prev.phase}"
            )
        elif obs.command is ManualCommand.RETRY and prev.phase in RESTARTABLE:
            self._restart(Reason.RETRY, f"{obs.command.annotation} after {prev.phase}")
        m.observed_generation = obs.generation

    def _restart(self, reason: Reason, why: str) -> None:
        m, spec = self.m, self.spec
        if m.canary_scaled_down and spec.canary.deployment is not None:
            self.actions.append(ScaleCanary(spec.canary.deployment, None))
        m.baseline_version, m.canary_version = spec.baseline.version, spec.canary.version
        m.phase, m.step_index, m.canary_weight = Phase.PENDING, 0, 0
        m.started_at = m.step_started_at = m.paused_at = m.metrics_unavailable_since = m.watch = None
        m.step_paused, m.manually_paused, m.canary_scaled_down = timedelta(0), False, False
        self.paused = spec.paused
        self.restarted = True
        self.loss = None  # evidence about the previous versions
        self.set(DecisionKind.RESTART, reason, f"{why}: restarting from step 1")

    def _command_on_restart(self) -> None:
        cmd = self.obs.command
        if cmd in (ManualCommand.PAUSE, ManualCommand.RESUME):
            self._pause_command()
        elif cmd is ManualCommand.ABORT:
            self.record(self.kind, self.reason, self.message)
            self._rollback(Reason.ABORTED, f"aborted by {cmd.annotation}")
        elif cmd is ManualCommand.PROMOTE:
            text = f"{cmd.annotation} ignored: the rollout just restarted; promote once it has started"
            self.event(EventType.WARNING, Reason.COMMAND_IGNORED, text)

    # ------------------------------------------------------------------ 2. terminal
    def _idle(self) -> None:
        self.kind = DecisionKind.IDLE
        cond = get_condition(self.prev.conditions, ConditionType.PROGRESSING)
        self.reason = cond.reason if cond is not None else self.m.phase.value
        self.message = self.prev.message or f"{self.m.phase}: {self.reason}"
        cmd = self.obs.command
        if cmd is not None:
            hint = "change spec.canary.version to start a new rollout"
            if self.m.phase in RESTARTABLE:
                hint = f"use {ManualCommand.RETRY.annotation} or change the spec to start again"
            text = f"{cmd.annotation} ignored: the rollout is {self.m.phase}; {hint}"
            self.event(EventType.WARNING, Reason.COMMAND_IGNORED, text)

    # ------------------------------------------------------------------ commands
    def _pause_command(self) -> None:
        cmd = self.obs.command
        if cmd is ManualCommand.PAUSE:
            self.m.manually_paused = True
        elif cmd is ManualCommand.RESUME:
            self.m.manually_paused = False
            if self.spec.paused:
                self.event(EventType.NORMAL, Reason.RESUMED, "resume noted; spec.paused is still true")
        elif cmd is ManualCommand.RETRY:
            text = f"{cmd.annotation} ignored: retry applies to RolledBack or Failed, this is {self.m.phase}"
            self.event(EventType.WARNING, Reason.COMMAND_IGNORED, text)
        self.paused = self.spec.paused or self.m.manually_paused

    def _pause_source(self) -> str:
        if self.spec.paused:
            return "spec.paused"
        return f"{ManualCommand.PAUSE.annotation}; resume with {ManualCommand.RESUME.annotation}"

    # ------------------------------------------------------------------ 3. not started
    def _pending(self) -> None:
        cmd, m, spec = self.obs.command, self.m, self.spec
        self.loss = None  # no step yet: evidence from before the start is not this rollout's
        self._track_unavailable()
        if cmd is ManualCommand.ABORT:
            return self._rollback(Reason.ABORTED, f"aborted by {cmd.annotation}")
        if self.health is HealthVerdict.FAIL:
            return self._block()
        if cmd is ManualCommand.PROMOTE:
            return self._promote(Reason.PROMOTED_MANUALLY, f"by {cmd.annotation} before any step")
        if self.paused:
            m.phase = Phase.PAUSED
            return self.set(DecisionKind.HOLD, Reason.PAUSED, f"paused before start ({self._pause_source()})")
        m.phase = Phase.PENDING
        waiting = self._blockers(starting=True)
        if waiting is not None:
            return self.set(DecisionKind.HOLD, waiting[0], f"waiting to start: {waiting[1]}")
        m.phase, m.step_index, m.canary_weight = Phase.PROGRESSING, 0, spec.steps[0].traffic
        m.started_at = m.step_started_at = self.now
        m.step_paused, m.paused_at = timedelta(0), None
        gate = fmt.health_line(self.obs.health) if self.health is not None else "no training-health gate"
        at = (
            self.shadow_start_line()
            if self.in_shadow
            else f"canary {spec.canary.version} at {m.canary_weight}%"
        )
        text = f"started: step 1/{len(spec.steps)}, {at} ({gate})"
        return self.set(DecisionKind.START, Reason.STARTED, text)

    def _blockers(self, starting: bool) -> tuple[Reason, str] | None:
        """Why the rollout cannot move now for reasons other than evidence; None when it can."""
        obs, spec = self.obs, self.spec
        policy = "" if starting else f"; {self._unavailable_policy()}"
        if not obs.metrics_available:
            since = self.m.metrics_unavailable_since or self.now
            problem = obs.metrics_problem or "no data"
            text = f"metrics unavailable for {fmt.dur(self.now - since)} ({problem}){policy}"
            return Reason.METRICS_UNAVAILABLE, text
        if self.health_unknown_blocks:
            text = f"training metrics of run {spec.canary.training_run} cannot be read{policy}"
            return Reason.TRAINING_METRICS_UNKNOWN, text
        seen = obs.canary_version_seen
        if seen is not None and seen != spec.canary.version:
            return Reason.CANARY_NOT_READY, f"canary serves version {seen}, not {spec.canary.version} yet"
        if obs.labels is not None:  # rollbacks come first: an imbalance never delays one
            hold = coverage_imbalance(obs.labels.baseline, obs.labels.canary).hold
            if hold is not None:
                return Reason.LABEL_COVERAGE_IMBALANCED, hold
        return None

    def _unavailable_policy(self) -> str:
        p = self.spec.analysis.on_metrics_unavailable
        if p.action is UnavailableAction.HOLD:
            return "holding the weight until they return"
        return f"holding the weight, rollback after {fmt.dur(p.after)}"

    def _track_unavailable(self) -> bool:
        unavailable = not self.obs.metrics_available or self.health_unknown_blocks
        if not unavailable:
            self.m.metrics_unavailable_since = None
        elif self.m.metrics_unavailable_since is None:
            self.m.metrics_unavailable_since = self.now
        return unavailable

    # ------------------------------------------------------------------ 4. started
    def _progressing(self) -> None:
        cmd, m, loss, spec = self.obs.command, self.m, self.loss, self.spec
        self._align_step()
        unavailable = self._track_unavailable()
        policy = spec.analysis.on_metrics_unavailable
        regression = loss is not None and loss.verdict is LossVerdict.REGRESSION
        enough = loss is not None and loss.n_canary >= spec.analysis.loss.min_samples_before_rollback
        since = m.metrics_unavailable_since
        if cmd is ManualCommand.ABORT:
            return self._rollback(Reason.ABORTED, f"aborted by {cmd.annotation}")
        if self.health is HealthVerdict.FAIL:
            run = spec.canary.training_run
            why = f"training run {run} failed gradient health: {fmt.health_line(self.obs.health)}"
            return self._rollback(Reason.TRAINING_UNHEALTHY, why)
        if regression and loss is not None and loss.catastrophic:
            return self._rollback(
                Reason.CATASTROPHIC_LOSS, "rate of catastrophic losses above the baseline's"
            )
        if regression and enough:
            return self._rollback(
                Reason.LOSS_REGRESSION, "canary loss worse than baseline by more than the margin"
            )
        failing = next((c for c in self.obs.checks if c.judged and c.verdict == LossVerdict.REGRESSION), None)
        if failing is not None:
            why = f"{failing.kind} check {failing.name}: {failing.reason.split(': ', 1)[-1]}"
            return self._rollback(Reason.CHECK_REGRESSION, why)
        if (paired := self.paired_regression()) is not None:
            return self._rollback(*paired)
        expired = since is not None and self.now - since >= policy.after
        if unavailable and expired and since is not None and policy.action is UnavailableAction.ROLLBACK:
            what = "metrics" if not self.obs.metrics_available else "training metrics"
            why = f"{what} unavailable for {fmt.dur(self.now - since)} (onMetricsUnavailable.after)"
            return self._rollback(Reason.METRICS_UNAVAILABLE, why)
        if cmd is ManualCommand.PROMOTE:
            return self._promote(Reason.PROMOTED_MANUALLY, f"by {cmd.annotation}")
        if self.paused:
            m.phase = Phase.PAUSED
            return self.set(
                DecisionKind.HOLD, Reason.PAUSED, self._step_line(f"paused ({self._pause_source()})")
            )
        m.phase = Phase.PROGRESSING
        blocked = self._blockers(starting=False)
        if blocked is not None:
            return self.set(DecisionKind.HOLD, blocked[0], self._step_line(blocked[1]))
        return self._evaluate_step()

    def _why_waiting(self, verdict: LossVerdict, promoting: bool) -> tuple[Reason, str] | None:
        """What the loss evidence still lacks before this step may end (None: nothing)."""
        loss, lp = self.loss, self.spec.analysis.loss
        if loss is None or verdict is LossVerdict.INSUFFICIENT_DATA:
            return Reason.INSUFFICIENT_DATA, "too little labelled data to judge"
        if verdict is LossVerdict.REGRESSION:
            n, need = fmt.count(loss.n_canary), lp.min_samples_before_rollback
            return (
                Reason.REGRESSION_BELOW_MIN_SAMPLES,
                f"regression signal, {n}/{need} samples before a rollback",
            )
        if not promoting:
            return None
        if (
            lp.promotion_policy is PromotionPolicy.REQUIRE_NON_INFERIORITY
            and verdict is not LossVerdict.NOT_WORSE
        ):
            return Reason.NON_INFERIORITY_NOT_SHOWN, "promotion requires non-inferiority, not shown yet"
        pending = [c.name for c in self.obs.checks if c.judged and c.verdict != LossVerdict.NOT_WORSE]
        if lp.promotion_policy is PromotionPolicy.REQUIRE_NON_INFERIORITY and pending:
            return Reason.NON_INFERIORITY_NOT_SHOWN, f"non-inferiority not shown yet by {', '.join(pending)}"
        if loss.n_canary < lp.min_samples_before_promotion:
            n, need = fmt.count(loss.n_canary), lp.min_samples_before_promotion
            return Reason.INSUFFICIENT_DATA, f"{n}/{need} canary samples before promotion"
        return None

    def _on_max_duration(self, max_duration: timedelta, promoting: bool, verdict: LossVerdict) -> None:
        """The step ran past maxDuration: roll back, advance, or hold, as spec.stepDefaults says."""
        action = self.spec.step_defaults.on_max_duration
        note = f"step exceeded maxDuration {fmt.dur(max_duration)}"
        if action is MaxDurationAction.ROLLBACK:
            return self._rollback(Reason.STEP_TIMED_OUT, note)
        if action is MaxDurationAction.ADVANCE and verdict is not LossVerdict.REGRESSION:
            return self._step_up(promoting, verdict, timed_out=True)
        text = self._step_line(f"{note}; holding for a manual promote or abort")
        return self.set(DecisionKind.HOLD, Reason.STEP_TIMED_OUT, text)

    def _evaluate_step(self) -> None:
        spec, m, loss = self.spec, self.m, self.loss
        if self.in_shadow:
            return self.evaluate_shadow()
        q = spec.quota(m.step_index)
        min_samples, min_duration = q.min_samples, q.min_duration
        if self.health is HealthVerdict.WARN:  # a warning lengthens the step
            min_samples, min_duration = 2 * min_samples, 2 * min_duration
        active, samples = m.active_in_step(self.now), self.obs.canary_samples_in_step
        verdict = loss.verdict if loss is not None else LossVerdict.INSUFFICIENT_DATA
        promoting = m.step_index + 1 == spec.last_step
        missing: list[str] = []
        if samples < min_samples:
            missing.append(f"{fmt.count(samples)}/{min_samples} samples")
        if active < min_duration:
            missing.append(f"{fmt.dur(active)}/{fmt.dur(min_duration)} in step")
        why = self._why_waiting(verdict, promoting)
        if why is None and not missing:
            return self._step_up(promoting, verdict, timed_out=False)
        if q.max_duration is not None and active >= q.max_duration:
            return self._on_max_duration(q.max_duration, promoting, verdict)
        reason, text = why if why is not None else (Reason.STEP_IN_PROGRESS, "")
        parts = [text] if text else []
        if missing:
            parts.append("waiting for " + ", ".join(missing))
        return self.set(DecisionKind.WAIT, reason, self._step_line("; ".join(parts) or "collecting evidence"))

    def _step_up(self, promoting: bool, verdict: LossVerdict, timed_out: bool) -> None:
        m, spec = self.m, self.spec
        evidence = f"step {m.step_index + 1}/{len(spec.steps)}: {self._loss_line()}"
        if promoting:
            reason = Reason.PROMOTED_NO_REGRESSION
            if timed_out:
                reason = Reason.PROMOTED_ON_TIMEOUT
            elif verdict is LossVerdict.NOT_WORSE:
                reason = Reason.PROMOTED_NON_INFERIOR
            return self._promote(reason, f"after {evidence}")
        m.step_index += 1
        m.canary_weight = spec.steps[m.step_index].traffic
        m.step_started_at, m.step_paused, m.paused_at = self.now, timedelta(0), None
        why = "maxDuration reached, onMaxDuration Advance" if timed_out else "quotas met, no regression"
        text = (
            f"advanced to step {m.step_index + 1}/{len(spec.steps)} at {m.canary_weight}% ({why}); {evidence}"
        )
        return self.set(
            DecisionKind.ADVANCE, Reason.STEP_TIMED_OUT if timed_out else Reason.STEP_ADVANCED, text
        )

    def _align_step(self) -> None:
        """Keep step_index consistent with the weight when spec.steps was edited mid-rollout."""
        m, steps = self.m, self.spec.steps
        last_analysis = len(steps) - 2
        if m.step_index <= last_analysis and steps[m.step_index].traffic == m.canary_weight:
            return
        i = next((k for k, s in enumerate(steps) if s.traffic >= m.canary_weight), last_analysis)
        m.step_index = min(i, last_analysis)
        if steps[m.step_index].traffic > m.canary_weight:  # an edit never lowers the weight
            m.canary_weight = steps[m.step_index].traffic
            m.step_started_at, m.step_paused = self.now, timedelta(0)

    # ------------------------------------------------------------------ transitions
    def _rollback(self, reason: Reason, why: str) -> None:
        m, spec = self.m, self.spec
        started = m.started_at is not None
        at = f"step {m.step_index + 1}/{len(spec.steps)}" if started else "before start"
        text = f"rolled back {spec.canary.version} to 0% at {at}: {why}"
        if reason in (Reason.LOSS_REGRESSION, Reason.CATASTROPHIC_LOSS):
            text += f" ({fmt.regression_detail(self.loss)})"
        if started and self.loss is not None:
            text += f"; {self._loss_line()}"
        m.phase, m.canary_weight, m.paused_at = Phase.ROLLED_BACK, 0, None
        if (
            spec.rollback.scale_down_canary
            and spec.canary.deployment is not None
            and not m.canary_scaled_down
        ):
            self.actions.append(ScaleCanary(spec.canary.deployment, 0))
            m.canary_scaled_down = True
        self.set(DecisionKind.ROLLBACK, reason, text)

    def _block(self) -> None:
        self.m.phase = Phase.FAILED
        run, health = self.spec.canary.training_run, fmt.health_line(self.obs.health)
        text = f"blocked before traffic moved: training run {run} failed gradient health: {health}"
        self.set(DecisionKind.BLOCK, Reason.TRAINING_UNHEALTHY, text)
