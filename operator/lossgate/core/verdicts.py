"""Verdict vocabularies shared by the judge, the health gate and the state machine."""

from __future__ import annotations

from enum import StrEnum


class LossVerdict(StrEnum):
    """What the sequential loss judge concludes at one look."""

    REGRESSION = "Regression"  # canary worse than baseline by more than the margin: roll back
    NOT_WORSE = "NotWorse"  # non-inferiority shown: canary not worse by more than the margin
    UNDECIDED = "Undecided"  # keep collecting evidence
    INSUFFICIENT_DATA = "InsufficientData"  # not enough labelled samples to judge at all


class HealthVerdict(StrEnum):
    """What the gradient-health gate concludes about the canary's training run."""

    PASS = "Pass"  # noqa: S105 (a verdict, not a password)
    WARN = "Warn"
    FAIL = "Fail"
    UNKNOWN = "Unknown"  # no training metrics could be read
