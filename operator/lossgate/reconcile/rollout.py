"""One tick of one ModelRollout: observe -> decide -> apply -> one status write.

Bad input never crashes the loop: an invalid spec becomes the SpecValid=False condition (with the
field and the fix) and an Event, and the tick waits for the next spec change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from lossgate.adapters.spec_refs import SpecProblem, loss_ref, route_ref
from lossgate.core.actions import EmitEvent, EventType
from lossgate.core.decision import Decision
from lossgate.core.evidence import Problem
from lossgate.core.machine import decide
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.model.conditions import ConditionStatus, ConditionType, Reason, set_condition
from lossgate.model.errors import validation_messages
from lossgate.model.resource import FOREIGN_STATUS_KEYS
from lossgate.reconcile.apply import apply
from lossgate.reconcile.deps import Deps
from lossgate.reconcile.observe import observe

INVALID_SPEC_RECHECK = timedelta(minutes=5)  # the daemon also wakes on any spec change


def status_of(body: Mapping[str, Any]) -> ModelRolloutStatus:
    raw = {k: v for k, v in dict(body.get("status") or {}).items() if k not in FOREIGN_STATUS_KEYS}
    try:
        return ModelRolloutStatus.model_validate(raw)
    except ValidationError:
        return ModelRolloutStatus()  # a status we cannot read is rebuilt from scratch, not fatal


def parse_spec(body: Mapping[str, Any]) -> ModelRolloutSpec | list[str]:
    meta = body.get("metadata") or {}
    try:
        return ModelRolloutSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as err:
        obj = f"ModelRollout {meta.get('namespace')}/{meta.get('name')}"
        return validation_messages(err, root="spec", model=ModelRolloutSpec, obj=obj)


async def tick(deps: Deps, body: Mapping[str, Any], emit: Callable[[EmitEvent], None]) -> timedelta:
    t0 = time.monotonic()
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 0)
    now = deps.clock.now()
    status = status_of(body)

    spec = parse_spec(body)
    try:
        ref = route_ref(ns, spec) if isinstance(spec, ModelRolloutSpec) else None
    except SpecProblem as err:
        spec = [str(err)]
    if not isinstance(spec, ModelRolloutSpec) or ref is None:
        await report_invalid(deps, body, spec if isinstance(spec, list) else [], emit)
        return INVALID_SPEC_RECHECK

    router = deps.router(ref)
    metrics = deps.metrics(ns, spec.analysis.prometheus)
    observed = await observe(
        spec=spec,
        status=status,
        generation=generation,
        annotations=dict(meta.get("annotations") or {}),
        router=router,
        metrics=metrics,
        loss_ref=loss_ref(ns, spec),
        now=now,
        training_lookback=deps.settings.training_lookback,
        scrape_lag=deps.settings.scrape_lag,
    )
    decision = decide(spec, status, observed.observation, now)
    applied = await apply(decision, router=router, objects=deps.objects, namespace=ns, emit=emit)

    router_problem = applied.problems[0] if applied.problems else observed.router_problem
    new_status = _reconciler_conditions(decision, router_problem, generation, now)
    write = deps.objects.write_status(ns, name, new_status.model_dump(mode="json", by_alias=True))
    if write is None and observed.observation.command is not None:
        deps.objects.remove_annotations(ns, name, [observed.observation.command.annotation])

    _telemetry(deps, ns, name, decision, observed.metrics_problem, time.monotonic() - t0)
    return decision.requeue_after


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
    return st.model_copy(update={"conditions": conds})


async def report_invalid(
    deps: Deps, body: Mapping[str, Any], problems: list[str], emit: Callable[[EmitEvent], None]
) -> None:
    """SpecValid=False with the field-named problems; the Event only when the problem is new."""
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 0)
    status, now = status_of(body), deps.clock.now()
    message = "; ".join(problems) or "the spec could not be read"
    was = next((c for c in status.conditions if c.type == ConditionType.SPEC_VALID), None)
    conds = set_condition(
        status.conditions,
        ConditionType.SPEC_VALID,
        ConditionStatus.FALSE,
        Reason.INVALID_SPEC,
        message,
        now,
        generation,
    )
    new = status.model_copy(
        update={"conditions": conds, "observed_generation": generation, "message": message}
    )
    deps.objects.write_status(ns, name, new.model_dump(mode="json", by_alias=True))
    if was is None or was.status != ConditionStatus.FALSE or was.message != message:
        emit(EmitEvent(EventType.WARNING, Reason.INVALID_SPEC.value, message))  # once per distinct problem


def _telemetry(
    deps: Deps, ns: str, name: str, decision: Decision, metrics_problem: Problem | None, seconds: float
) -> None:
    t = deps.telemetry
    t.analysis_seconds.observe(seconds)
    t.decisions.labels(ns, name, decision.kind.value).inc()
    t.set_phase(ns, name, decision.status.phase.value)
    t.canary_weight.labels(ns, name).set(decision.status.canary_weight)
    if metrics_problem is not None:
        t.query_errors.labels(ns, name, metrics_problem.kind).inc()
