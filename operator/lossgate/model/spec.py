"""ModelRollout spec: what users write. The CRD schema is generated from these classes.

Every cross-field check exists twice, as a pydantic validator (the operator) and as a CEL rule (the
API server refuses the manifest at `kubectl apply`); both name the field and say what to do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from lossgate.model.analysis import Analysis, ObjectName
from lossgate.model.base import ApiModel, cel, validations
from lossgate.model.durations import Duration, PositiveDuration, format_duration
from lossgate.model.post_promotion import HOLDBACK_RULE, PostPromotion

API_GROUP = "lossgate.io"
API_VERSION = "v1alpha1"
KIND = "ModelRollout"
MAX_STEPS = 20

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # Service names (RFC 1035 label)
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"  # label values: model, version
ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
LabelValue = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]


class MaxDurationAction(StrEnum):
    ROLLBACK = "Rollback"  # roll back a step that could not be decided in time
    HOLD = "Hold"  # keep the weight, say so in status, wait for a manual promote or abort
    ADVANCE = "Advance"  # waive the step's quotas (never on a regression verdict) and move on


class RouterKind(StrEnum):
    GATEWAY_API = "gatewayAPI"
    ISTIO = "istio"
    REPLICAS = "replicas"


class BaselineRef(ApiModel):
    version: LabelValue = Field(description="Value of the `version` label on the baseline's serving metrics.")
    service: ServiceName = Field(description="Service in front of the baseline model servers.")
    deployment: ObjectName | None = Field(
        default=None, description="Deployment of the baseline (required for replicas routing)."
    )
    training_run: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Value of the `run` label on the training metrics of the run that produced the "
        "baseline; its latest validation loss on the same holdout is what the canary run's is compared with.",
    )


class CanaryRef(ApiModel):
    version: LabelValue = Field(description="Value of the `version` label on the canary's serving metrics.")
    service: ServiceName = Field(description="Service in front of the canary model servers.")
    deployment: ObjectName | None = Field(
        default=None,
        description="Deployment of the canary (required for replicas routing and rollback.scaleDownCanary).",
    )
    training_run: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Value of the `run` label on the training metrics of the run that produced the canary; "
        "when set, its gradient health gates the start and every step.",
    )


class GatewayAPIRouting(ApiModel):
    http_route: ObjectName = Field(description="HTTPRoute (same namespace) whose rule splits the traffic.")
    rule_index: int = Field(
        default=0, ge=0, le=15, description="Index of the rule in the route's spec.rules."
    )


class IstioRouting(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.routeName) && has(self.routeIndex))",
                "spec.trafficRouting.istio: set routeName or routeIndex, not both",
            )
        )
    )

    virtual_service: ObjectName = Field(description="VirtualService (same namespace) to write weights into.")
    route_name: str | None = Field(
        default=None, min_length=1, max_length=253, description="Name of the HTTP route in spec.http."
    )
    route_index: int | None = Field(
        default=None, ge=0, le=1000, description="Index in spec.http (when routeName is not set; default 0)."
    )

    @model_validator(mode="after")
    def _one_route(self) -> IstioRouting:
        if self.route_name is not None and self.route_index is not None:
            raise ValueError("routeName and routeIndex are both set; fix: keep one of them")
        return self


class ReplicasRouting(ApiModel):
    """Split by replica counts of the baseline and canary Deployments (no mesh or gateway needed)."""


class TrafficRouting(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "[has(self.gatewayAPI), has(self.istio), has(self.replicas)].filter(x, x).size() == 1",
                "spec.trafficRouting: set exactly one of gatewayAPI, istio or replicas",
            )
        )
    )

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    istio: IstioRouting | None = None
    replicas: ReplicasRouting | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        n = sum(x is not None for x in (self.gateway_api, self.istio, self.replicas))
        if n != 1:
            raise ValueError(f"{n} routers are set; fix: set exactly one of gatewayAPI, istio or replicas")
        return self

    @property
    def kind(self) -> RouterKind:
        if self.gateway_api is not None:
            return RouterKind.GATEWAY_API
        if self.istio is not None:
            return RouterKind.ISTIO
        return RouterKind.REPLICAS


_MIN_MAX = cel(
    "!has(self.minDuration) || !has(self.maxDuration) || "
    "duration(self.minDuration) < duration(self.maxDuration)",
    "maxDuration must be longer than minDuration",
    field_path=".maxDuration",
)


def _check_min_max(lo: timedelta | None, hi: timedelta | None) -> None:
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(
            f"maxDuration: {format_duration(hi)} is not longer than minDuration {format_duration(lo)}; "
            "fix: raise maxDuration or lower minDuration"
        )


class ShadowStep(ApiModel):
    """The canary serves no user; the router mirrors a share of the baseline's requests to it and the
    paired judge compares both versions' losses on the same requests (docs/judge.md, "Paired evidence")."""

    mirror_percent: int = Field(
        ge=1,
        le=100,
        description="Percent of the baseline's requests mirrored to the canary (responses discarded).",
    )


_ONE_KIND = cel(
    "has(self.weight) != has(self.shadow)",
    "a step sets either weight or shadow (e.g. {weight: 5} or {shadow: {mirrorPercent: 50}})",
)


class Step(ApiModel):
    model_config = ConfigDict(json_schema_extra=validations(_MIN_MAX, _ONE_KIND))

    weight: int | None = Field(
        default=None, ge=1, le=100, description="Canary traffic percent during this step (a live step)."
    )
    shadow: ShadowStep | None = Field(
        default=None,
        description="A shadow step (only as the first step): the canary serves nobody and is judged on "
        "mirrored requests; its quotas count paired samples.",
    )
    min_samples: int | None = Field(
        default=None, ge=0, le=1_000_000_000, description="Labelled canary samples (default: stepDefaults)."
    )
    min_duration: Duration | None = Field(
        default=None, description="Minimum time in step (default: stepDefaults)."
    )
    max_duration: PositiveDuration | None = Field(
        default=None,
        description="Time after which stepDefaults.onMaxDuration applies (default: stepDefaults).",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> Step:
        _check_min_max(self.min_duration, self.max_duration)
        if (self.weight is None) == (self.shadow is None):
            raise ValueError(
                "a step sets either weight or shadow; fix: write {weight: 5} or {shadow: {mirrorPercent: 50}}"
            )
        return self

    @property
    def traffic(self) -> int:
        """The canary's share of user traffic in this step (0 in a shadow step)."""
        return 0 if self.weight is None else self.weight


class StepDefaults(ApiModel):
    """Quotas for steps that do not set their own, and what happens when a step runs too long."""

    model_config = ConfigDict(json_schema_extra=validations(_MIN_MAX))

    min_samples: int = Field(default=1000, ge=0, le=1_000_000_000)
    min_duration: Duration = Field(default="5m", validate_default=True)
    max_duration: PositiveDuration | None = None
    on_max_duration: MaxDurationAction = MaxDurationAction.ROLLBACK

    @model_validator(mode="after")
    def _min_below_max(self) -> StepDefaults:
        _check_min_max(self.min_duration, self.max_duration)
        return self


class RollbackPolicy(ApiModel):
    scale_down_canary: bool = Field(
        default=False,
        description="Scale the canary Deployment to 0 on rollback (off by default: under GitOps the "
        "Deployment's replicas belong to Git, and the weight is what stops traffic).",
    )


@dataclass(frozen=True)
class StepQuota:
    """A step's effective quotas (the step's own values, else stepDefaults)."""

    min_samples: int
    min_duration: timedelta
    max_duration: timedelta | None


_LIVE = "self.filter(s, has(s.weight))"
_STEP_RULES = validations(
    cel(
        "has(self[self.size() - 1].weight) && self[self.size() - 1].weight == 100",
        "spec.steps: the last step must have weight 100 (reaching it promotes the canary)",
    ),
    cel(
        f"{_LIVE}.map(s, s.weight).isSorted() && {_LIVE}.all(s, {_LIVE}.exists_one(t, t.weight == s.weight))",
        "spec.steps: weights must be strictly increasing (e.g. 5, 25, 50, 100)",
    ),
    cel(
        "self.all(s, !has(s.shadow)) || has(self[0].shadow) && self.filter(s, has(s.shadow)).size() == 1",
        "spec.steps: only the first step may be a shadow step",
    ),
    cel(
        "!has(self[0].shadow) || self.size() >= 3",
        "spec.steps: a shadow step needs a live step below 100 after it (e.g. shadow, 5, 100)",
    ),
)
_SPEC_RULES = validations(
    cel(
        "self.baseline.version != self.canary.version",
        "spec.canary.version must differ from spec.baseline.version",
        field_path=".canary.version",
    ),
    cel(
        "!has(self.trafficRouting.replicas) || has(self.baseline.deployment) && has(self.canary.deployment)",
        "spec.trafficRouting.replicas needs spec.baseline.deployment and spec.canary.deployment",
        field_path=".trafficRouting.replicas",
    ),
    cel(
        "!has(self.steps[0].shadow) || !has(self.trafficRouting.replicas)",
        "spec.steps: a shadow step needs a router that mirrors (gatewayAPI or istio), not replicas",
        field_path=".steps",
    ),
    cel(
        "!has(self.rollback) || !self.rollback.scaleDownCanary || has(self.canary.deployment)",
        "spec.rollback.scaleDownCanary needs spec.canary.deployment",
        field_path=".rollback.scaleDownCanary",
    ),
    HOLDBACK_RULE,
)


class ModelRolloutSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    model: LabelValue = Field(description="Value of the `model` label on serving metrics.")
    baseline: BaselineRef
    canary: CanaryRef
    traffic_routing: TrafficRouting
    steps: list[Step] = Field(
        min_length=2,
        max_length=MAX_STEPS,
        description="Canary weights, strictly increasing, ending at 100 (reaching 100 is the promotion).",
        json_schema_extra=_STEP_RULES,
    )
    step_defaults: StepDefaults = StepDefaults()
    analysis: Analysis
    rollback: RollbackPolicy = RollbackPolicy()
    paused: bool = Field(default=False, description="Hold the weight (safety rollbacks stay armed).")
    post_promotion: PostPromotion | None = Field(
        default=None,
        description="Watch late labels after the promotion, with a baseline holdback (absent: no watch).",
    )

    @field_validator("steps")
    @classmethod
    def _weights(cls, steps: list[Step]) -> list[Step]:
        if any(s.shadow is not None for s in steps[1:]):
            raise ValueError("only the first step may be a shadow step; fix: move it first or drop it")
        if steps[0].shadow is not None and len(steps) < 3:
            raise ValueError(
                "a shadow step needs a live step below 100 after it; "
                "fix: e.g. shadow, {weight: 5}, {weight: 100}"
            )
        weights = [s.weight for s in steps if s.weight is not None]
        if steps[-1].weight != 100:
            raise ValueError(
                f"the last step has weight {steps[-1].weight}; fix: end with {{weight: 100}} (it promotes)"
            )
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError(
                f"weights {weights} are not strictly increasing; fix: order them, e.g. 5, 25, 50, 100"
            )
        return steps

    @model_validator(mode="after")
    def _checks(self) -> ModelRolloutSpec:
        # "<path>: <message>" puts the error on that field (see lossgate.model.errors).
        if self.baseline.version == self.canary.version:
            raise ValueError(
                f"canary.version: equals baseline.version ({self.canary.version!r}); "
                "fix: give the canary the version label of the new model"
            )
        if self.traffic_routing.replicas is not None and (
            self.baseline.deployment is None or self.canary.deployment is None
        ):
            raise ValueError(
                "trafficRouting.replicas: replicas routing needs both Deployments; "
                "fix: set baseline.deployment and canary.deployment, or route with gatewayAPI or istio"
            )
        if self.shadow is not None and self.traffic_routing.replicas is not None:
            raise ValueError(
                "steps: a shadow step needs a router that mirrors requests; "
                "fix: route with gatewayAPI or istio, or drop the shadow step"
            )
        pp, live = self.post_promotion, max(s.traffic for s in self.steps[:-1])
        if pp is not None and live > 100 - pp.holdback_weight:
            h = pp.holdback_weight
            raise ValueError(
                f"postPromotion.holdbackWeight: {h} leaves the canary {100 - h}% in the watch, below step "
                f"weight {live}; fix: lower that step or the holdback"
            )
        if self.rollback.scale_down_canary and self.canary.deployment is None:
            raise ValueError(
                "rollback.scaleDownCanary: there is no canary Deployment to scale; "
                "fix: set canary.deployment, or scaleDownCanary: false"
            )
        return self

    @property
    def shadow(self) -> ShadowStep | None:
        """The shadow step, when the rollout starts with one (it is always steps[0])."""
        return self.steps[0].shadow

    def in_shadow(self, index: int) -> bool:
        return self.steps[index].shadow is not None

    @property
    def family_checks(self) -> int:
        """Checks sharing alphaRollback (core/family.py): the analysis's, plus the paired judge of a
        shadow step, so the shadow and the live steps together stay within alphaRollback."""
        return self.analysis.family_checks + (1 if self.shadow is not None else 0)

    @property
    def last_step(self) -> int:
        return len(self.steps) - 1

    def quota(self, index: int) -> StepQuota:
        step, d = self.steps[index], self.step_defaults
        return StepQuota(
            min_samples=d.min_samples if step.min_samples is None else step.min_samples,
            min_duration=d.min_duration if step.min_duration is None else step.min_duration,
            max_duration=d.max_duration if step.max_duration is None else step.max_duration,
        )

    @property
    def health_gated(self) -> bool:
        """Whether the canary's training run gates the rollout."""
        return self.canary.training_run is not None and self.analysis.gradient_health.enabled
