"""Apply a Decision's actions idempotently: router weights, canary scale, Events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lossgate.adapters.kube import RolloutObjects
from lossgate.core.actions import EmitEvent, ScaleCanary, SetMirror, SetWeight
from lossgate.core.decision import Decision
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import MirrorRouter, TrafficRouter
from lossgate.reconcile.threads import to_thread

EventSink = Callable[[EmitEvent], None]


@dataclass
class Applied:
    weights: Weights | None = None  # what the router reports after the write
    problems: list[Problem] = field(default_factory=list)


async def apply(
    decision: Decision, *, router: TrafficRouter, objects: RolloutObjects, namespace: str, emit: EventSink
) -> Applied:
    out = Applied()
    for action in decision.actions:
        match action:
            case SetWeight():
                got = await to_thread(router.set_weights, action.weights)
                if isinstance(got, Problem):
                    out.problems.append(got)
                else:
                    out.weights = got
            case SetMirror():
                if not isinstance(router, MirrorRouter):
                    text = f"router {type(router).__name__} cannot mirror requests: use gatewayAPI or istio"
                    out.problems.append(Problem("MirrorUnsupported", text))
                    continue
                mirrored = await to_thread(router.set_mirror, action.percent)
                if isinstance(mirrored, Problem):
                    out.problems.append(mirrored)
            case ScaleCanary():
                problem = await to_thread(
                    objects.scale_deployment, namespace, action.deployment, action.replicas
                )
                if problem is not None:
                    out.problems.append(problem)
            case EmitEvent():
                emit(action)
    return out
