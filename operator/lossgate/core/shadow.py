"""The shadow step's rules (part of decide(), pure): a rollout whose first step is
`{shadow: {mirrorPercent: P}}` keeps the canary at weight 0 while the router mirrors P% of the
baseline's requests to it, and the paired judge (core/paired.py) compares both versions' losses on the
same requests.

- A paired regression (at least minSamplesBeforeRollback pairs) rolls back at once: no user request
  was served by the canary.
- Paired non-inferiority with the step's quotas met (minSamples counts pairs, minDuration time in the
  step; both doubled while training health warns) moves to the first live step.
- Past the step's maxDuration, stepDefaults.onMaxDuration applies (Advance never on a regression).
- Everything else of a step holds as in live steps (abort, training health, checks, pause, metrics).
The mirror itself follows from the state (TickBase.repair_mirror): on only while in the shadow step.
"""

from __future__ import annotations

from datetime import timedelta

from lossgate.core import summary as fmt
from lossgate.core.decision import DecisionKind
from lossgate.core.tick import TickBase
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model.conditions import Reason
from lossgate.model.spec import MaxDurationAction

NO_USER = "the canary served no user request (shadow step)"


class ShadowRules(TickBase):
    @property
    def in_shadow(self) -> bool:
        return self.spec.in_shadow(self.m.step_index)

    def _rollback(self, reason: Reason, why: str) -> None:  # the state machine's
        raise NotImplementedError

    def shadow_start_line(self) -> str:
        shadow = self.spec.shadow
        percent = shadow.mirror_percent if shadow is not None else 0
        return (
            f"shadow: canary {self.spec.canary.version} serves no user, {percent}% of requests mirrored to it"
        )

    def paired_line(self) -> str:
        return self.paired.line() if self.paired is not None else "no paired evidence yet"

    def paired_regression(self) -> tuple[Reason, str] | None:
        """A paired regression in the shadow step (the fold needs minSamplesBeforeRollback pairs)."""
        p = self.paired
        if not self.in_shadow or p is None or p.verdict is not LossVerdict.REGRESSION:
            return None
        why = (
            f"paired test: canary loss worse than the baseline's on the same requests by more than "
            f"the margin ({p.line()}); {NO_USER}"
        )
        return Reason.PAIRED_REGRESSION, why

    def evaluate_shadow(self) -> None:
        m, spec, p = self.m, self.spec, self.paired
        q = spec.quota(m.step_index)
        min_samples, min_duration = q.min_samples, q.min_duration
        if self.health is HealthVerdict.WARN:
            min_samples, min_duration = 2 * min_samples, 2 * min_duration
        active = m.active_in_step(self.now)
        pairs = p.n if p is not None else 0.0
        verdict = p.verdict if p is not None else LossVerdict.INSUFFICIENT_DATA
        missing: list[str] = []
        if pairs < min_samples:
            missing.append(f"{fmt.count(pairs)}/{min_samples} paired samples")
        if active < min_duration:
            missing.append(f"{fmt.dur(active)}/{fmt.dur(min_duration)} in step")
        if verdict is LossVerdict.NOT_WORSE and not missing:
            return self._leave_shadow(timed_out=False)
        if q.max_duration is not None and active >= q.max_duration:
            return self._shadow_timed_out(q.max_duration, verdict)
        if verdict in (LossVerdict.INSUFFICIENT_DATA, LossVerdict.REGRESSION):
            reason, text = Reason.INSUFFICIENT_DATA, "too few paired samples to judge"
            if p is not None and p.problem:
                text += f" ({p.problem})"
        elif verdict is LossVerdict.UNDECIDED:
            reason, text = Reason.NON_INFERIORITY_NOT_SHOWN, "paired non-inferiority not shown yet"
        else:
            reason, text = Reason.STEP_IN_PROGRESS, "paired non-inferiority shown"
        if missing:
            text += "; waiting for " + ", ".join(missing)
        self.set(DecisionKind.WAIT, reason, self._shadow_line(text))

    def _shadow_timed_out(self, max_duration: timedelta, verdict: LossVerdict) -> None:
        action = self.spec.step_defaults.on_max_duration
        note = f"shadow step exceeded maxDuration {fmt.dur(max_duration)}"
        if action is MaxDurationAction.ROLLBACK:
            return self._rollback(Reason.STEP_TIMED_OUT, f"{note}; {NO_USER}")
        if action is MaxDurationAction.ADVANCE and verdict is not LossVerdict.REGRESSION:
            return self._leave_shadow(timed_out=True)
        self.set(
            DecisionKind.HOLD,
            Reason.STEP_TIMED_OUT,
            self._shadow_line(f"{note}; holding for a manual promote or abort"),
        )

    def _leave_shadow(self, timed_out: bool) -> None:
        m, spec = self.m, self.spec
        evidence = self.paired_line()
        m.step_index += 1
        m.canary_weight = spec.steps[m.step_index].traffic
        m.step_started_at, m.step_paused, m.paused_at = self.now, timedelta(0), None
        why = (
            "maxDuration reached, onMaxDuration Advance"
            if timed_out
            else "paired non-inferiority, quotas met"
        )
        text = (
            f"left the shadow step for step {m.step_index + 1}/{len(spec.steps)} at {m.canary_weight}% "
            f"({why}); {evidence}"
        )
        reason = Reason.STEP_TIMED_OUT if timed_out else Reason.SHADOW_PASSED
        self.set(DecisionKind.ADVANCE, reason, text)

    # ------------------------------------------------------------------ step lines (every step's)
    def _loss_line(self) -> str:
        if self.in_shadow:
            return self.paired_line()
        m, samples = self.m, self.obs.canary_samples_in_step
        target = fmt.samples_target(self.spec.quota(m.step_index).min_samples, samples, self.loss)
        return fmt.loss_line(self.loss, samples, target)

    def _step_line(self, note: str) -> str:
        line = f"step {self.m.step_index + 1}/{len(self.spec.steps)}: {self._loss_line()}"
        return f"{line}; {note}" if note else line

    def _shadow_line(self, note: str) -> str:
        return f"step {self.m.step_index + 1}/{len(self.spec.steps)} (shadow): {self.paired_line()}; {note}"
