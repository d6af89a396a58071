"""kopf handlers: thin. Startup builds the dependencies; a daemon per ModelRollout runs ticks
(loop.py), woken early by an event handler on spec edits and command annotations (wake.py); a
validation handler rejects bad specs once (no retry storm); a finalizer restores the baseline.
Startup also starts the watches that keep the routers' read cache (route_cache.py).

Run with `lossgate operator` (or `kopf run -m lossgate.reconcile.handlers`).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from lossgate.adapters.routers.k8s import REQUEST_TIMEOUT
from lossgate.adapters.spec_refs import tail_bucket_note
from lossgate.core.actions import EmitEvent
from lossgate.core.evidence import Problem, Weights
from lossgate.model import API_GROUP, API_VERSION, PLURAL, ModelRolloutStatus
from lossgate.model.conditions import Reason
from lossgate.model.status import Phase
from lossgate.ports import RouterErrorKind
from lossgate.reconcile import loop, route_cache
from lossgate.reconcile.deps import Deps, OperatorConfig, load_api_client
from lossgate.reconcile.rollout import report_invalid
from lossgate.reconcile.spec_check import check_spec
from lossgate.reconcile.status_io import status_of
from lossgate.reconcile.threads import to_thread

GROUP, VERSION = API_GROUP, API_VERSION
KOPF_WORKER_IDLE_S = 1.0
RESOURCE = (GROUP, VERSION, PLURAL)
_GONE = {
    RouterErrorKind.NOT_FOUND.value,
    RouterErrorKind.CRD_MISSING.value,
    RouterErrorKind.BACKEND_NOT_FOUND.value,
}

logging.getLogger("kopf.objects").addFilter(route_cache.QuietCacheHandlers())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "deps" not in memo:  # tests may pass a memo with their own Deps
        memo["deps"] = Deps(api_client=load_api_client(), settings=OperatorConfig.from_env())
    deps: Deps = memo["deps"]
    # kopf keeps its bookkeeping in lossgate.io annotations, never in our structural status.
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our decisions post their own Events
    settings.watching.server_timeout = 300
    # kopf's own calls (patches, Events) get the same bounds as ours (adapters/routers/k8s.py).
    settings.networking.connect_timeout = REQUEST_TIMEOUT[0]
    settings.networking.request_timeout = sum(REQUEST_TIMEOUT)
    # kopf processes each object's events in a worker of its own, unbounded by default: 10,000 new
    # objects meant 10,000 PATCHes at once, timeouts and retries. Bound them, and let an idle worker
    # go after a second (not five) so the bound is not held by objects with nothing to do.
    settings.queueing.worker_limit = deps.settings.kopf_workers
    settings.queueing.idle_timeout = KOPF_WORKER_IDLE_S
    deps.start()
    if deps.settings.metrics_port > 0:
        deps.telemetry.serve(deps.settings.metrics_port, deps.settings.metrics_address)
    # Before kopf starts watching: a watch the API server refuses would stop the whole operator.
    kinds = await to_thread(route_cache.watchable, deps.api_client, deps.settings.namespaces)
    route_cache.start_watches(kinds)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "deps" in memo:
        memo["deps"].close()


def _emitter(body: kopf.Body) -> Any:
    def emit(e: EmitEvent) -> None:
        kopf.event(body, type=e.type.value, reason=e.reason, message=e.message[:1000])

    return emit


@kopf.on.create(*RESOURCE)
@kopf.on.resume(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def validate(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Refuse a spec the operator cannot act on, once: condition + Event, then a permanent error."""
    checked = check_spec(body)
    if isinstance(checked, list):
        await report_invalid(memo["deps"], body, checked, _emitter(body))
        raise kopf.PermanentError("; ".join(checked))
    note = tail_bucket_note(checked[0])
    if note is not None:  # legal (custom buckets), but the catastrophic guard may be blind: say so once
        kopf.warn(body, reason=Reason.TAIL_BUCKET_UNKNOWN.value, message=note[:1000])


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0)
async def analyse(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: Any, **_: Any
) -> None:
    """The rollout loop: one tick, then sleep for the decision's requeue (a live body sees spec edits)
    or until wake_on_change wakes it."""
    await loop.run(memo["deps"], body, _emitter(body), stopped, logger)


@kopf.on.event(*RESOURCE)
async def wake_on_change(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake the rollout's daemon on a spec edit or a command annotation (writes nothing: no loop)."""
    deps: Deps = memo["deps"]
    uid = str(body.get("metadata", {}).get("uid") or "")
    if event.get("type") == "DELETED":
        deps.wakeups.forget(uid)
        meta = body.get("metadata", {})
        deps.telemetry.forget(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    else:
        deps.wakeups.saw(uid, body)


@kopf.on.delete(*RESOURCE)
async def restore_baseline(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Deleted mid-rollout: route 100% back to the baseline. After promotion the canary keeps its traffic
    (in the post-promotion watch it gets the holdback's share too)."""
    deps: Deps = memo["deps"]
    read = status_of(body)  # an unreadable status still says, as a string, whether it was promoted
    phase = read.phase.value if isinstance(read, ModelRolloutStatus) else read.phase
    if phase == Phase.PROMOTED.value:
        return
    checked = check_spec(body)
    if isinstance(checked, list):
        return
    spec, ref = checked
    router = deps.router(ref)
    # Deleted in the post-promotion watch: the promotion stands, the holdback goes.
    watching = phase == Phase.WATCHING.value
    split = Weights(baseline=0, canary=100) if watching else Weights(baseline=100, canary=0)
    got = await to_thread(router.set_weights, split)
    if isinstance(got, Problem):
        if got.kind in _GONE:
            logger.warning("nothing to restore: %s", got.message)
            return
        raise kopf.TemporaryError(f"could not restore the baseline's traffic: {got.message}", delay=10)
    if watching:
        logger.info("removed the holdback: 100%% of traffic to the promoted %s", spec.canary.version)
    else:
        logger.info("restored 100%% of traffic to the baseline %s", spec.baseline.version)
