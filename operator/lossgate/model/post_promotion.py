"""spec.postPromotion: after the promotion, keep a small holdback on the baseline and watch the labels
that arrive late (docs/judge.md, "Post-promotion watch"). Absent: the promotion ends the rollout."""

from __future__ import annotations

from datetime import timedelta

from pydantic import ConfigDict, Field, model_validator

from lossgate.model.base import ApiModel, cel, validations
from lossgate.model.durations import PositiveDuration, format_duration

MAX_HOLDBACK = 5  # percent: enough concurrent control for late labels, little traffic kept on the old model
DEFAULT_HOLDBACK = 5
MAX_WINDOW = timedelta(days=30)
# A rule of the whole spec (ModelRolloutSpec's CEL rules): the watch never lowers the canary's weight.
HOLDBACK_RULE = cel(
    "!has(self.postPromotion) || self.steps.all(s, !has(s.weight) || s.weight == 100 || "
    "s.weight <= 100 - (has(self.postPromotion.holdbackWeight) ? self.postPromotion.holdbackWeight "
    f": {DEFAULT_HOLDBACK}))",
    "spec.postPromotion.holdbackWeight: every step below 100 must leave the holdback to the baseline "
    "(weight <= 100 - holdbackWeight), so the watch never lowers the canary's weight",
    field_path=".postPromotion.holdbackWeight",
)


class PostPromotion(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.window) || duration(self.window) <= duration('720h')",
                "spec.postPromotion.window: at most 720h (30 days)",
                field_path=".window",
            )
        )
    )

    holdback_weight: int = Field(
        default=DEFAULT_HOLDBACK,
        ge=0,
        le=MAX_HOLDBACK,
        description="Percent of traffic the baseline keeps during the watch (canary 100 - holdbackWeight). "
        "0: no holdback; the watch then compares the promoted model with the baseline's last level and "
        "only warns (no rollback).",
    )
    window: PositiveDuration = Field(
        default="24h",
        validate_default=True,
        description="How long after the promotion late labels are watched; then the holdback is removed.",
    )

    @model_validator(mode="after")
    def _window(self) -> PostPromotion:
        if self.window > MAX_WINDOW:
            raise ValueError(
                f"window: {format_duration(self.window)} is longer than 720h; fix: watch for at most 30 days"
            )
        return self

    @property
    def holdback(self) -> bool:
        """Whether the baseline keeps traffic (a concurrent control: a late regression rolls back)."""
        return self.holdback_weight > 0
