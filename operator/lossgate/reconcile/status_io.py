"""The status a tick starts from, and whether the one it ends with is worth a PATCH.

A status that does not validate is never replaced by a fresh one (that would restart a live rollout
at weight 0): it comes back as `UnreadableStatus`, naming the fields, and the tick decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from lossgate.model import ModelRolloutStatus
from lossgate.model.conditions import Condition
from lossgate.model.errors import validation_messages
from lossgate.model.resource import FOREIGN_STATUS_KEYS

# core/summary.py stamps analysis.updatedAt with the tick's `now` whenever there is loss evidence, so
# alone it never justifies a write; it is refreshed at most every STATUS_REFRESH (docs/operator.md).
# trainingHealth.updatedAt is not volatile: it says when the training run was last read, and the
# next read is scheduled from it (core/step.py training_due).
VOLATILE = (("analysis", "updatedAt"),)
STATUS_REFRESH = timedelta(minutes=5)


@dataclass(frozen=True)
class UnreadableStatus:
    """A .status the operator cannot read: what is wrong, and what of it can still be kept."""

    problems: tuple[str, ...]  # one line per field, e.g. "status.stepPaused: ..."
    conditions: tuple[Condition, ...]  # the conditions that did validate (kept when we write ours)
    phase: str | None  # the raw phase string, for the finalizer's "was it promoted?"

    @property
    def message(self) -> str:
        return "; ".join(self.problems)


def raw_status(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(body.get("status") or {}).items() if k not in FOREIGN_STATUS_KEYS}


def status_of(body: Mapping[str, Any]) -> ModelRolloutStatus | UnreadableStatus:
    raw = raw_status(body)
    try:
        return ModelRolloutStatus.model_validate(raw)
    except (ValidationError, ValueError, OverflowError, TypeError) as err:
        meta = body.get("metadata") or {}
        obj = f"ModelRollout {meta.get('namespace')}/{meta.get('name')}"
        phase = raw.get("phase")
        return UnreadableStatus(
            tuple(_problems(err, raw, obj)), tuple(readable_conditions(raw)), str(phase) if phase else None
        )


def _problems(err: Exception, raw: dict[str, Any], obj: str) -> list[str]:
    if isinstance(err, ValidationError):
        return validation_messages(err, root="status", model=ModelRolloutStatus, obj=obj)
    # Not a ValidationError (e.g. an OverflowError from a huge duration): find the field one key at a time.
    found = []
    for key, value in raw.items():
        try:
            ModelRolloutStatus.model_validate({key: value})
        except Exception as e:
            found.append(f"{obj}: status.{key}: {type(e).__name__}: {e}, got {str(value)[:80]!r}")
    return found or [f"{obj}: status: {type(err).__name__}: {err}"]


def readable_conditions(raw: Mapping[str, Any]) -> list[Condition]:
    """The conditions of a status, or none when the list itself does not validate."""
    try:
        return [Condition.model_validate(c) for c in raw.get("conditions") or []]
    except (ValidationError, ValueError, OverflowError, TypeError):
        return []


def wire(status: ModelRolloutStatus) -> dict[str, Any]:
    """The status as written (and as compared: both sides go through the model)."""
    return status.model_dump(mode="json", by_alias=True)


def needs_write(
    old: ModelRolloutStatus, new: ModelRolloutStatus, refresh: timedelta = STATUS_REFRESH
) -> bool:
    """False when the new status equals the one read, the VOLATILE stamp aside, and that stamp is younger
    than `refresh` (so analysis.updatedAt says how fresh the evidence is to within `refresh`)."""
    if _stable(wire(old)) != _stable(wire(new)):
        return True
    stamps = (
        (
            old.analysis.updated_at if old.analysis else None,
            new.analysis.updated_at if new.analysis else None,
        ),
        (
            old.training_health.updated_at if old.training_health else None,
            new.training_health.updated_at if new.training_health else None,
        ),
    )
    return any(_due(before, after, refresh) for before, after in stamps)


def _due(before: datetime | None, after: datetime | None, refresh: timedelta) -> bool:
    if after is None or before == after:
        return False
    return before is None or after - before >= refresh


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for block, key in VOLATILE:
        if isinstance(out.get(block), dict):
            out[block] = {k: v for k, v in out[block].items() if k != key}
    return out
