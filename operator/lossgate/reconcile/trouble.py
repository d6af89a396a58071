"""The Reconciled condition when a tick cannot do its job: an unreadable status, a crash, a timeout.

Each becomes Reconciled=False with a reason and a message that says what to do, written as a merge
patch of status.conditions alone (the rest of the status, however broken, is left as it is and the
router is not touched), and one Warning Event per distinct problem, not one per retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from lossgate.core.actions import EmitEvent, EventType
from lossgate.core.evidence import Problem
from lossgate.model import ModelRolloutStatus
from lossgate.model.conditions import ConditionStatus, ConditionType, Reason, get_condition, set_condition
from lossgate.reconcile.deps import Deps
from lossgate.reconcile.status_io import UnreadableStatus, status_of
from lossgate.reconcile.threads import to_thread

# An unreadable status is looked at again after this (sooner when the status is edited: wake.py).
UNREADABLE_RECHECK = timedelta(minutes=1)
_BACKOFF_S = (5, 10, 20, 40, 80, 160, 300)  # a crashing or timing-out tick, by consecutive failures


def failure_backoff(failures: int) -> timedelta:
    return timedelta(seconds=_BACKOFF_S[min(max(failures, 1), len(_BACKOFF_S)) - 1])


def unreadable_message(body: Mapping[str, Any], read: UnreadableStatus) -> str:
    meta = body["metadata"]
    clear = (
        f"kubectl patch modelrollout {meta['name']} -n {meta['namespace']} --subresource=status "
        """--type=merge -p '{"status":null}'"""
    )
    return (
        f"the status cannot be read: {read.message}. lossgate decides nothing and leaves the traffic as it "
        f"is until it can: fix the field(s), or clear the status to restart the rollout from step 1 ({clear})"
    )


def failure_message(err: BaseException, timeout: timedelta) -> tuple[Reason, str]:
    if isinstance(err, TimeoutError):
        return Reason.TICK_TIMED_OUT, (
            f"the analysis tick did not finish within {timeout.total_seconds():g}s "
            "(LOSSGATE_TICK_TIMEOUT_S): a slow API server or Prometheus? lossgate retries with back-off"
        )
    text = str(err)[:300]
    return Reason.TICK_FAILED, (
        f"the analysis tick failed: {type(err).__name__}: {text}; lossgate retries with back-off "
        "(the operator's log has the traceback: please report it)"
    )


async def report_trouble(
    deps: Deps, body: Mapping[str, Any], reason: Reason, message: str, emit: Callable[[EmitEvent], None]
) -> Problem | None:
    """Reconciled=False (reason, message) on the object; the Event only when that is news."""
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 0)
    deps.telemetry.tick_failures.labels(ns, name, reason.value).inc()
    read = status_of(body)
    conditions = read.conditions if isinstance(read, ModelRolloutStatus) else list(read.conditions)
    was = get_condition(conditions, ConditionType.RECONCILED)
    if was is not None and (was.status, was.reason, was.message) == (ConditionStatus.FALSE, reason, message):
        return None  # already said, and the object already says it
    new = set_condition(
        conditions,
        ConditionType.RECONCILED,
        ConditionStatus.FALSE,
        reason,
        message,
        deps.clock.now(),
        generation,
    )
    patch = {"conditions": [c.model_dump(mode="json", by_alias=True) for c in new]}
    problem = await to_thread(deps.objects.write_status, ns, name, patch)
    emit(EmitEvent(EventType.WARNING, reason.value, message))
    return problem
