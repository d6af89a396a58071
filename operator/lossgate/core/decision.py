"""The output of decide(): the new status, the actions to apply, and when to look again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from lossgate.core.actions import Action, EmitEvent, ScaleCanary, SetWeight
from lossgate.model.status import ModelRolloutStatus

if TYPE_CHECKING:  # core/notify.py maps DecisionKind: a runtime import would be circular
    from lossgate.core.notify import Notice


class DecisionKind(StrEnum):
    """What a tick decided (the operator's `decisions by kind` metric uses these values)."""

    START = "Start"  # training health passed: traffic moves to the first step
    ADVANCE = "Advance"  # quotas met, no regression: next step
    PROMOTE = "Promote"  # canary to 100%
    ROLLBACK = "Rollback"  # canary to 0% (regression, training health, abort, metrics timeout, ...)
    BLOCK = "Block"  # refused before traffic moved (training run unhealthy)
    RESTART = "Restart"  # new canary version, retry, or a spec change after a terminal phase
    WAIT = "Wait"  # collecting evidence on the current step
    HOLD = "Hold"  # not moving for a reason other than evidence: paused, metrics unavailable, ...
    IDLE = "Idle"  # terminal phase: nothing to do but keep the weight in place


@dataclass(frozen=True)
class Decision:
    status: ModelRolloutStatus
    actions: tuple[Action, ...]
    requeue_after: timedelta
    kind: DecisionKind
    reason: str
    # Recorded decisions worth telling people about (core/notify.py); sent after the status is written.
    notices: tuple[Notice, ...] = ()

    @property
    def set_weight(self) -> SetWeight | None:
        return next((a for a in self.actions if isinstance(a, SetWeight)), None)

    @property
    def events(self) -> tuple[EmitEvent, ...]:
        return tuple(a for a in self.actions if isinstance(a, EmitEvent))

    @property
    def scale(self) -> ScaleCanary | None:
        return next((a for a in self.actions if isinstance(a, ScaleCanary)), None)
