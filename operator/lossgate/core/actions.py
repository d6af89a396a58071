"""Actions decide() asks for: data, executed elsewhere (the reconciler, through the adapters).

Every action is idempotent: the traffic router reads the weights back before writing, scaling
sets an absolute replica count, and events are deduplicated by Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lossgate.core.evidence import Weights


@dataclass(frozen=True)
class SetWeight:
    """Route `canary` percent of traffic to the canary and the rest to the baseline."""

    canary: int

    def __post_init__(self) -> None:
        if not 0 <= self.canary <= 100:
            raise ValueError(f"canary weight out of range: {self.canary}")

    @property
    def weights(self) -> Weights:
        return Weights(baseline=100 - self.canary, canary=self.canary)


@dataclass(frozen=True)
class SetMirror:
    """Mirror `percent` of the baseline's requests to the canary (0 removes the mirror)."""

    percent: int

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ValueError(f"mirror percent out of range: {self.percent}")


@dataclass(frozen=True)
class ScaleCanary:
    """Scale the canary Deployment: replicas=0 scales it down (the adapter records the previous count
    in the annotation `lossgate.io/replicas-before-scale-down`); replicas=None restores that count."""

    deployment: str
    replicas: int | None

    @property
    def to_zero(self) -> bool:
        return self.replicas == 0


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the ModelRollout (reason: a lossgate.model.Reason value)."""

    type: EventType
    reason: str
    message: str


Action = SetWeight | SetMirror | ScaleCanary | EmitEvent
