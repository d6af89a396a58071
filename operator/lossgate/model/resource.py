"""The ModelRollout resource as a whole: apiVersion, kind, metadata, spec, status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lossgate.model.base import ApiModel
from lossgate.model.spec import API_GROUP, API_VERSION, KIND, ModelRolloutSpec
from lossgate.model.status import ModelRolloutStatus

API_VERSION_STRING = f"{API_GROUP}/{API_VERSION}"
PLURAL = "modelrollouts"
SHORT_NAME = "mro"

# Status keys that belong to other writers (kopf's progress storage): kept out of the typed status.
FOREIGN_STATUS_KEYS = frozenset({"kopf"})


class ModelRollout(ApiModel):
    """A whole object as read from the API server (metadata is kept as a plain mapping)."""

    api_version: Literal["lossgate.io/v1alpha1"] = "lossgate.io/v1alpha1"
    kind: Literal["ModelRollout"] = "ModelRollout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = ModelRolloutStatus()

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        if v is None:
            return {}
        if isinstance(v, dict):
            return {k: x for k, x in v.items() if k not in FOREIGN_STATUS_KEYS}
        return v

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))

    @property
    def ref(self) -> str:
        """How messages name the object: "ModelRollout ml-prod/fraud-scorer"."""
        return f"{KIND} {self.namespace}/{self.name}" if self.namespace else f"{KIND} {self.name}"
