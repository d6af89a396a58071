"""The family of checks one rollout runs, and its error rate (docs/judge.md, "Guardrails").

Checks: the pooled loss judge, each guardrail, one slot per class the per-class judge may judge, the
Brier gate (spec.analysis.calibration.gate, core/calibration.py) and a language model's loss per
token (spec.analysis.tokenLoss, core/token_fold.py) when configured.
A false rollback happens when any check's regression test rejects a true null; with m checks each at
alpha_rollback / m, the union bound (Bonferroni) keeps the family's chance of that at most
alpha_rollback. Each check's p-value is always valid (valid at any stopping time, however often it is
looked at), so the bound holds over the whole rollout, not just at a planned look. Bonferroni rather
than Holm: the number of slots is fixed by the spec (so no check's level depends on the data or on
which classes have shown up), each level is known before any data, and a verdict once reached is
never revisited when another check decides; Holm's step-down would let one check's rejection loosen
the others' levels, which buys little when a single rejection already ends the rollout.

Promotion is an intersection-union test: the canary is promoted as non-inferior only when every
check shows it, so each non-inferiority test keeps the full alpha_promote (no split is needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lossgate.core.verdicts import LossVerdict


def family_size(
    guardrails: int, class_slots: int, shadow: bool = False, brier: bool = False, tokens: bool = False
) -> int:
    """Checks sharing alpha_rollback: the pooled judge, the guardrails, the per-class slots, the
    paired judge of a shadow phase (core/paired.py) when the rollout starts with one, the Brier
    gate of spec.analysis.calibration (core/calibration.py) and the loss per token of
    spec.analysis.tokenLoss (core/token_fold.py). The shadow phase's test and the live steps' tests
    are all in one family, so the union bound covers the whole rollout: a false rollback in shadow or
    in any live step, at most alpha_rollback in all."""
    if guardrails < 0 or class_slots < 0:
        raise ValueError("counts of checks must be >= 0")
    return 1 + guardrails + class_slots + (1 if shadow else 0) + (1 if brier else 0) + (1 if tokens else 0)


def split_alpha(alpha: float, checks: int) -> float:
    """Each check's share of the family's alpha (Bonferroni)."""
    if not 0 < alpha < 1 or checks < 1:
        raise ValueError(f"need 0 < alpha < 1 and at least one check, got {alpha!r}, {checks!r}")
    return alpha / checks


@dataclass(frozen=True)
class CheckVerdict:
    """One check's verdict as the family sees it. `judged` False: reported, never blocking."""

    name: str
    verdict: LossVerdict
    reason: str
    judged: bool = True


@dataclass(frozen=True)
class FamilyVerdict:
    regression: CheckVerdict | None  # the first check (in order) that shows a regression
    all_not_worse: bool  # every judged check shows non-inferiority
    pending: tuple[str, ...]  # judged checks that have not shown non-inferiority yet


def combine(checks: Sequence[CheckVerdict]) -> FamilyVerdict:
    """Regression if any judged check regresses; non-inferior only if every judged check is."""
    judged = [c for c in checks if c.judged]
    regression = next((c for c in judged if c.verdict is LossVerdict.REGRESSION), None)
    pending = tuple(c.name for c in judged if c.verdict is not LossVerdict.NOT_WORSE)
    return FamilyVerdict(regression, regression is None and not pending, pending)
