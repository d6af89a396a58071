"""The post-promotion watch (part of decide(), pure): spec.postPromotion keeps the rollout open after
the promotion while the labels of its last requests (and of the promoted model's first ones) arrive.

- The promotion moves the canary to 100 - holdbackWeight (phase Watching); the baseline keeps the rest.
  The judge and the checks keep folding the intervals, the same always-valid tests as before (docs/
  judge.md says why that costs no extra alpha).
- With a holdback, a regression (the loss judge, its catastrophic guard, or a check) rolls back to
  the baseline: weight 0, RolledBack, reason PostPromotionRegression; the Promoted condition turns False.
- Without one (holdbackWeight 0) the canary has 100%: a regression, or the promoted model's loss
  above the baseline's last level plus the margin (core/watch_ref.py), only warns (an Event and the
  PostPromotionWatch condition False); there is no concurrent control to blame the model with.
- Abort rolls back; promote ends the watch now; pause keeps the watch open past its window (the
  rollbacks stay armed); the watch never ends while metrics are unavailable (never blind).
- When the window has passed: 100% canary, phase Promoted, reason WatchPassed.
"""

from __future__ import annotations

from datetime import timedelta

from lossgate.core import summary as fmt
from lossgate.core.actions import EventType
from lossgate.core.decision import DecisionKind
from lossgate.core.observation import ManualCommand
from lossgate.core.shadow import ShadowRules
from lossgate.core.verdicts import LossVerdict
from lossgate.core.watch_ref import p_value
from lossgate.model.conditions import ConditionStatus, Reason
from lossgate.model.durations import format_timestamp
from lossgate.model.status import Phase, WatchStatus

HOLDBACK, WARN_ONLY = "Holdback", "WarnOnly"
REGRESSION, WARNED = "Regression", "Warned"
_PROMOTION_BASIS = {
    Reason.PROMOTED_NON_INFERIOR: "non-inferiority shown",
    Reason.PROMOTED_NO_REGRESSION: "no regression, policy NoRegression",
    Reason.PROMOTED_ON_TIMEOUT: "maxDuration reached, onMaxDuration Advance",
    Reason.PROMOTED_MANUALLY: "manual",
}
U, T, F = ConditionStatus.UNKNOWN, ConditionStatus.TRUE, ConditionStatus.FALSE


class WatchRules(ShadowRules):
    # ------------------------------------------------------------------ the promotion
    def _promote(self, reason: Reason, why: str) -> None:
        m, spec, pp = self.m, self.spec, self.spec.post_promotion
        m.phase, m.step_index, m.canary_weight, m.paused_at = Phase.PROMOTED, spec.last_step, 100, None
        if m.started_at is None:
            m.started_at = self.now
        text = f"promoted {spec.canary.version} to 100% ({_PROMOTION_BASIS[reason]}) {why}"
        if pp is None:
            return self.set(DecisionKind.PROMOTE, reason, text)
        h, loss = pp.holdback_weight, self.loss
        m.phase, m.canary_weight = Phase.WATCHING, 100 - h
        m.step_started_at, m.step_paused = self.now, timedelta(0)  # a new split: a new stratum
        m.watch = WatchStatus(
            mode=HOLDBACK if pp.holdback else WARN_ONLY,
            started_at=self.now,
            ends_at=self.now + pp.window,
            holdback_weight=h,
            reference_mean=None if pp.holdback or loss is None else loss.mean_baseline,
            margin=None if pp.holdback or loss is None else loss.margin,
        )
        until = format_timestamp(self.now + pp.window)
        how = f"the baseline keeps {h}%" if h else "no holdback: a regression only warns"
        text = text.replace("to 100%", f"to {100 - h}%") + f"; watching late labels until {until} ({how})"
        self.watch_condition = (U, str(Reason.WATCH_STARTED), text)
        self.set(DecisionKind.PROMOTE, reason, text)

    # ------------------------------------------------------------------ during the watch
    def watching(self) -> None:
        m, pp, w, cmd = self.m, self.spec.post_promotion, self.m.watch, self.obs.command
        if w is None:  # a status edited by hand: nothing to watch against
            return self._end_watch(Reason.WATCH_ENDED, "no watch state in status")
        if self.obs.late is not None:
            w = self._add_late(w)
        if pp is not None and w.ends_at != w.started_at + pp.window:  # a window edit applies now
            w = w.model_copy(update={"ends_at": w.started_at + pp.window})
        m.watch = w
        self._pause_command()
        unavailable = self._track_unavailable()
        if cmd is ManualCommand.ABORT:
            return self._rollback(Reason.ABORTED, f"aborted by {cmd.annotation} in the post-promotion watch")
        finding = None if unavailable else self._finding(w)
        if finding is not None and w.mode == HOLDBACK:
            m.watch = w.model_copy(update={"finding": REGRESSION})
            self._rollback(Reason.POST_PROMOTION_REGRESSION, f"found in the post-promotion watch: {finding}")
            self.watch_condition = (F, str(Reason.POST_PROMOTION_REGRESSION), self.message)
            return None
        if finding is not None and w.finding != WARNED:
            m.watch = w = w.model_copy(update={"finding": WARNED})
            text = (
                f"the promoted {self.spec.canary.version} looks worse in the post-promotion watch: "
                f"{finding}; no holdback (holdbackWeight 0), so nothing is rolled back: check the model "
                "and traffic, abort to roll back by hand"
            )
            self.event(EventType.WARNING, Reason.POST_PROMOTION_WARNING, text)
            self.watch_condition = (F, str(Reason.POST_PROMOTION_WARNING), text)
        if pp is None:
            return self._end_watch(Reason.WATCH_ENDED, "spec.postPromotion removed")
        if cmd is ManualCommand.PROMOTE:
            return self._end_watch(Reason.WATCH_ENDED_MANUALLY, f"ended early by {cmd.annotation}")
        over = self.now >= w.ends_at
        if over and not unavailable and not self.paused:
            return self._end_watch(Reason.WATCH_PASSED, f"the {fmt.dur(pp.window)} window passed")
        note = f"until {format_timestamp(w.ends_at)}"
        if over:
            note = "window passed; " + ("paused: resume to end it" if self.paused else "metrics unavailable")
        text = f"watching after the promotion ({self._watch_line(w)}), {note}"
        if w.finding != WARNED:
            self.watch_condition = (U, str(Reason.WATCH_STARTED), text)
        reason = Reason.METRICS_UNAVAILABLE if unavailable else Reason.WATCH_STARTED
        self.set(DecisionKind.WAIT, reason, text)
        return None

    def _finding(self, w: WatchStatus) -> str | None:
        """The regression the watch found this tick, in words (None: none)."""
        loss = self.loss
        if loss is not None and loss.verdict is LossVerdict.REGRESSION:
            what = "catastrophic losses above the baseline's" if loss.catastrophic else "loss regression"
            return f"{what} ({fmt.regression_detail(loss)}); {self._loss_line()}"
        failing = next((c for c in self.obs.checks if c.judged and c.verdict == LossVerdict.REGRESSION), None)
        if failing is not None:
            return f"{failing.kind} check {failing.name}: {failing.reason.split(': ', 1)[-1]}"
        if w.mode == WARN_ONLY and w.p_regression is not None and w.p_regression <= self.watch_alpha:
            return (
                f"mean loss {fmt.num(w.mean)} over {fmt.count(w.n)} labels, above the baseline's last level "
                f"{fmt.num(w.reference_mean)} + margin {fmt.num(w.margin)} (p = {w.p_regression:.2g})"
            )
        return None

    @property
    def watch_alpha(self) -> float:
        """The warn-only test's level: the pooled judge's share of alphaRollback."""
        return self.spec.analysis.loss.alpha_rollback / self.spec.family_checks

    def _add_late(self, w: WatchStatus) -> WatchStatus:
        late = self.obs.late
        if late is None or late.n <= 0:
            return w
        n, total, sumsq = w.n + late.n, w.sum + late.sum, w.sumsq + late.sumsq
        p = None
        if w.reference_mean is not None and w.margin is not None:
            p = p_value(n, total, sumsq, w.reference_mean + w.margin)
            p = p if w.p_regression is None else min(p, w.p_regression)  # ever below alpha stays so
        update = {"n": n, "sum": total, "sumsq": sumsq, "mean": fmt.sig(total / n), "p_regression": p}
        return w.model_copy(update={**update, "counted_through_ms": late.through_ms})

    def _watch_line(self, w: WatchStatus) -> str:
        if w.mode == HOLDBACK:
            return f"baseline holdback {w.holdback_weight}%; {self._loss_line()}"
        ref = f"baseline's last level {fmt.num(w.reference_mean)}"
        return f"no holdback; {fmt.count(w.n)} canary labels, mean {fmt.num(w.mean)} vs {ref}"

    def _end_watch(self, reason: Reason, why: str) -> None:
        m = self.m
        m.phase, m.canary_weight, m.paused_at = Phase.PROMOTED, 100, None
        warned = m.watch is not None and m.watch.finding == WARNED
        text = f"post-promotion watch over ({why}): {self.spec.canary.version} at 100%, holdback removed"
        if warned:
            text += "; it warned of a regression (see the PostPromotionWatch condition)"
        else:
            self.watch_condition = (T, str(reason), text)
        self.set(DecisionKind.ADVANCE, reason, text)

    # the state machine's (core/machine.py)
    def _pause_command(self) -> None:
        raise NotImplementedError

    def _track_unavailable(self) -> bool:
        raise NotImplementedError
