"""One tick of one ModelRollout: observe -> decide -> apply -> at most one status write.

Bad input never crashes the loop: an invalid spec becomes the SpecValid=False condition (with the
field and the fix) and an Event, and the tick waits for the next spec change. A status that cannot be
read becomes Reconciled=False (trouble.py) and nothing is decided. The status is written only when
it changed (status_io.needs_write). Every Kubernetes call runs in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from lossgate.adapters.spec_refs import (
    calibration_ref,
    canary_pods_ref,
    class_checks,
    guardrail_checks,
    guardrail_refs,
    health_config,
    judge_config,
    loss_ref,
    token_config,
    token_ref,
)
from lossgate.core.actions import EmitEvent, EventType
from lossgate.core.checks import plan_checks
from lossgate.core.decision import Decision
from lossgate.core.evidence import Problem
from lossgate.core.machine import decide
from lossgate.core.notify import NOTIFY_ANNOTATION, envelope, subscriptions_of
from lossgate.core.paired_step import plan_paired_read
from lossgate.core.step import Judged, judge_tick, plan_loss_read
from lossgate.model import ModelRolloutStatus
from lossgate.model.conditions import ConditionStatus, ConditionType, Reason, set_condition
from lossgate.model.spec import ModelRolloutSpec
from lossgate.model.status import ChecksState, JudgeState
from lossgate.reconcile.apply import apply
from lossgate.reconcile.deps import Deps
from lossgate.reconcile.observe import gather
from lossgate.reconcile.spec_check import check_spec
from lossgate.reconcile.status_io import UnreadableStatus, needs_write, status_of, wire
from lossgate.reconcile.threads import to_thread
from lossgate.reconcile.trouble import UNREADABLE_RECHECK, report_trouble, unreadable_message

INVALID_SPEC_RECHECK = timedelta(minutes=5)  # the daemon also wakes on any spec change


async def tick(deps: Deps, body: Mapping[str, Any], emit: Callable[[EmitEvent], None]) -> timedelta:
    t0 = time.monotonic()
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 0)
    now = deps.clock.now()
    read = status_of(body)
    uid = str(meta.get("uid") or "")
    deps.wakeups.watch_status(uid, isinstance(read, UnreadableStatus))  # a status fix wakes the daemon
    if isinstance(read, UnreadableStatus):  # decide nothing on a status we cannot read; router untouched
        await report_trouble(deps, body, Reason.STATUS_UNREADABLE, unreadable_message(body, read), emit)
        return UNREADABLE_RECHECK
    status = read

    checked = check_spec(body)
    if isinstance(checked, list):
        await report_invalid(deps, body, checked, emit)
        return INVALID_SPEC_RECHECK
    spec, ref = checked

    router = deps.router(ref)
    metrics = await deps.metrics(ns, spec.analysis.prometheus)
    series, config = loss_ref(ns, spec), judge_config(spec)
    plan = plan_loss_read(spec, status, config, series)
    paired_plan = plan_paired_read(spec, status, config, series)
    guardrails, classes, g_refs = (
        tuple(guardrail_checks(spec)),
        class_checks(spec),
        tuple(guardrail_refs(ns, spec)),
    )
    interval_s = spec.analysis.interval.total_seconds()
    cal_ref = calibration_ref(ns, spec)
    tokens, t_ref = token_config(spec), token_ref(ns, spec)
    # t_ref only when set: a rollout without tokenLoss keeps its checks' fingerprint (and folds).
    refs = (g_refs, series, cal_ref) + ((t_ref,) if t_ref is not None else ())
    checks_plan = plan_checks(
        status, interval_s, guardrails, classes, refs, calibrated=cal_ref is not None, tokens=tokens
    )
    pods = canary_pods_ref(ns, spec)
    got = await gather(
        spec=spec,
        status=status,
        generation=generation,
        annotations=dict(meta.get("annotations") or {}),
        router=router,
        metrics=metrics,
        loss_ref=series,
        plan=plan,
        now=now,
        training_lookback=deps.settings.training_lookback,
        scrape_lag=deps.settings.scrape_lag,
        versions=deps.versions(pods) if pods is not None else None,
        label_checks=deps.settings.label_checks,
        checks_plan=checks_plan,
        guardrails=g_refs,
        per_class=classes is not None,
        paired_plan=paired_plan,
        calibration=cal_ref,
        token_ref=t_ref,
    )
    judged = judge_tick(
        spec, status, plan, got, config, health_config(spec), checks_plan, guardrails, classes, paired_plan,
        tokens,
    )  # fmt: skip
    decision = decide(spec, status, judged.observation, now)
    applied = await apply(decision, router=router, objects=deps.objects, namespace=ns, emit=emit)

    router_problem = applied.problems[0] if applied.problems else judged.router_problem
    new_status = _reconciler_conditions(decision, router_problem, generation, now)
    new_status = new_status.model_copy(
        update={
            "judge_state": _judge_state(decision, judged),
            "checks": list(judged.observation.checks),
            "checks_state": _checks_state(decision, judged),
            "calibration": judged.calibration if decision.status.step_starts else None,
            "paired_state": None if decision.status.terminal else judged.paired_state,
        }
    )
    write = await _write_status(deps, ns, name, status, new_status)
    if write is None:  # only a decision the status holds is news: a failed write is decided again
        notify(deps, meta, spec, decision)
    if write is None and judged.observation.command is not None:
        annotation = judged.observation.command.annotation
        await to_thread(deps.objects.remove_annotations, ns, name, [annotation])

    deps.telemetry.record_tick(ns, name, decision, judged.metrics_problem, time.monotonic() - t0, now)
    deps.telemetry.rollout.record(ns, name, spec, decision.status, now)
    return decision.requeue_after


def notify(deps: Deps, meta: Mapping[str, Any], spec: ModelRolloutSpec, decision: Decision) -> None:
    """Hand the decision's notices to the notifier (queued; delivery never holds up the tick)."""
    annotations = meta.get("annotations") or {}
    subscriptions = subscriptions_of(annotations.get(NOTIFY_ANNOTATION))
    for notice in decision.notices:
        env = envelope(
            notice,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=str(meta.get("uid") or ""),
            model=spec.model,
            versions=(spec.baseline.version, spec.canary.version),
            analysis=decision.status.analysis,
            subscriptions=subscriptions,
        )
        deps.notifier.submit(env)


def _judge_state(decision: Decision, judged: Judged) -> JudgeState | None:
    """The judge's running state to keep: none once the rollout finished (status.analysis keeps the
    verdict; the state would only cost etcd space and every watcher's memory), restarted or never
    started."""
    st = decision.status
    if not st.step_starts or judged.judge_state is None or st.terminal:
        return None
    if judged.judge_state.origin_ms != round(st.step_starts[0].at.timestamp() * 1000):
        return None  # restarted this tick: the next tick judges the new start afresh
    return judged.judge_state


def _checks_state(decision: Decision, judged: Judged) -> ChecksState | None:
    """The checks' running state, kept under the same rules as the judge's."""
    st, state = decision.status, judged.checks_state
    if not st.step_starts or state is None or st.terminal:
        return None
    return state if state.origin_ms == round(st.step_starts[0].at.timestamp() * 1000) else None


def _reconciler_conditions(
    decision: Decision, router_problem: Problem | None, generation: int, now: datetime
) -> ModelRolloutStatus:
    st = decision.status
    conds = set_condition(
        st.conditions,
        ConditionType.SPEC_VALID,
        ConditionStatus.TRUE,
        Reason.SPEC_OK,
        "spec is valid",
        now,
        generation,
    )
    if router_problem is None:
        ready, reason, msg = ConditionStatus.TRUE, str(Reason.ROUTER_OK), "route can be read and written"
    else:
        ready, reason, msg = ConditionStatus.FALSE, router_problem.kind, router_problem.message
    conds = set_condition(conds, ConditionType.ROUTER_READY, ready, reason, msg, now, generation)
    conds = set_condition(
        conds,
        ConditionType.RECONCILED,
        ConditionStatus.TRUE,
        Reason.TICK_OK,
        "the last analysis tick completed",
        now,
        generation,
    )
    return st.model_copy(update={"conditions": conds})


async def _write_status(
    deps: Deps, ns: str, name: str, old: ModelRolloutStatus, new: ModelRolloutStatus
) -> Problem | None:
    """One merge patch of the whole status, or none when nothing changed (status_io.needs_write)."""
    if not needs_write(old, new):
        deps.telemetry.status_writes.labels("skipped").inc()
        return None
    deps.telemetry.status_writes.labels("written").inc()
    return await to_thread(deps.objects.write_status, ns, name, wire(new))


async def report_invalid(
    deps: Deps, body: Mapping[str, Any], problems: list[str], emit: Callable[[EmitEvent], None]
) -> None:
    """SpecValid=False with the field-named problems; the Event only when the problem is new."""
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 0)
    read, now = status_of(body), deps.clock.now()
    message = "; ".join(problems) or "the spec could not be read"
    conditions = read.conditions if isinstance(read, ModelRolloutStatus) else list(read.conditions)
    was = next((c for c in conditions if c.type == ConditionType.SPEC_VALID), None)
    conds = set_condition(
        conditions,
        ConditionType.SPEC_VALID,
        ConditionStatus.FALSE,
        Reason.INVALID_SPEC,
        message,
        now,
        generation,
    )
    if isinstance(read, ModelRolloutStatus):
        new = read.model_copy(
            update={"conditions": conds, "observed_generation": generation, "message": message}
        )
        await _write_status(deps, ns, name, read, new)
    else:  # an unreadable status stays as it is: only the conditions are written
        patch = {"conditions": [c.model_dump(mode="json", by_alias=True) for c in conds]}
        await to_thread(deps.objects.write_status, ns, name, patch)
    if was is None or was.status != ConditionStatus.FALSE or was.message != message:
        emit(EmitEvent(EventType.WARNING, Reason.INVALID_SPEC.value, message))  # once per distinct problem
