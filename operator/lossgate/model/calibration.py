"""spec.analysis.calibration and status.calibration: reliability of each arm's confidence, and the
optional Brier gate (docs/judge.md, "Calibration"; the counters in docs/metrics.md)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from lossgate.conventions import BRIER_MAX, CALIBRATION_BINS, CALIBRATION_METRIC
from lossgate.model.base import ApiModel, cel, validations
from lossgate.model.durations import Timestamp

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
BRIER_CHECK = "calibration:brier"  # the gate's name in status.checks (no guardrail name has a colon)


class CalibrationGate(StrEnum):
    BRIER = "Brier"  # the mean per-request Brier score of the predicted distribution, in [0, 2]


class CalibrationAnalysis(ApiModel):
    """Report ECE and MCE of both arms (status.calibration); with `gate`, also judge calibration."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.gate) == has(self.margin)",
                "spec.analysis.calibration: set gate and margin together (e.g. gate: Brier, margin: 0.005), "
                "or neither to only report ECE and MCE",
            )
        )
    )

    metric: str = Field(
        default=CALIBRATION_METRIC,
        max_length=200,
        pattern=METRIC_NAME,
        description=f"Base name of the reliability counters (default {CALIBRATION_METRIC}).",
    )
    gate: CalibrationGate | None = Field(
        default=None,
        description="Brier: roll back when the canary's mean Brier score is worse by more than margin.",
    )
    margin: float | None = Field(
        default=None,
        gt=0,
        lt=BRIER_MAX,
        description="Absolute margin on the mean Brier score (in [0, 2]), e.g. 0.005.",
    )

    @model_validator(mode="after")
    def _gate_and_margin(self) -> CalibrationAnalysis:
        if (self.gate is None) != (self.margin is None):
            missing = "margin" if self.margin is None else "gate"
            raise ValueError(
                f"{missing} is not set; fix: set gate: Brier with a margin (e.g. 0.005), or neither to only "
                "report ECE and MCE"
            )
        return self

    @property
    def gated(self) -> bool:
        return self.gate is not None


class ReliabilityBin(ApiModel):
    count: float = 0.0
    confidence: float | None = Field(default=None, description="Mean top-class probability in the bin.")
    accuracy: float | None = Field(default=None, description="Fraction of the bin's predictions correct.")


class ArmCalibrationStatus(ApiModel):
    n: float = Field(default=0.0, description="Labelled predictions counted.")
    ece: float | None = Field(default=None, description="Expected calibration error (binned, l1).")
    mce: float | None = Field(default=None, description="Maximum calibration error over non-empty bins.")
    brier: float | None = Field(default=None, description="Mean Brier score, in [0, 2].")
    accuracy: float | None = None
    confidence: float | None = Field(default=None, description="Mean top-class probability.")
    bins: list[ReliabilityBin] = Field(default_factory=list, description="The reliability diagram.")


class CalibrationStatus(ApiModel):
    """Both arms' calibration over the rollout so far (the intervals the checks have read)."""

    bins: int = Field(default=CALIBRATION_BINS, description="Equal-width confidence bins.")
    baseline: ArmCalibrationStatus = ArmCalibrationStatus()
    canary: ArmCalibrationStatus = ArmCalibrationStatus()
    updated_at: Timestamp | None = None
