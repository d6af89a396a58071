"""Whether the operator can act on a ModelRollout's spec: the one check besides the CRD's CEL rules.

The schema (pydantic, mirrored by the CRD) and the references the adapters need (the route) are
checked together; the validation handler and every tick call this, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from lossgate.adapters.routers import RouteRef
from lossgate.adapters.spec_refs import SpecProblem, route_ref
from lossgate.model import ModelRolloutSpec
from lossgate.model.errors import validation_messages


def parse_spec(body: Mapping[str, Any]) -> ModelRolloutSpec | list[str]:
    """The spec, or the problems with it (each names the field and the fix)."""
    meta = body.get("metadata") or {}
    try:
        return ModelRolloutSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as err:
        obj = f"ModelRollout {meta.get('namespace')}/{meta.get('name')}"
        return validation_messages(err, root="spec", model=ModelRolloutSpec, obj=obj)


def check_spec(body: Mapping[str, Any]) -> tuple[ModelRolloutSpec, RouteRef] | list[str]:
    """The spec and its route, or the problems that keep the operator from acting on it."""
    spec = parse_spec(body)
    if not isinstance(spec, ModelRolloutSpec):
        return spec
    try:
        return spec, route_ref(str((body.get("metadata") or {}).get("namespace")), spec)
    except SpecProblem as err:
        return [str(err)]
