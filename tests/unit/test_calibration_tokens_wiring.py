"""Calibration (its Brier gate) and a language model's loss per token in one rollout: both are checks
of the same Bonferroni family, each read and folded beside the other, and the post-promotion watch
acts on their findings like on the loss judge's (issue 21's three parts together). The per-feature
wiring is in test_calibration_wiring.py, test_token_wiring.py and test_watch_tick.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossgate.adapters.spec_refs import guardrail_checks, judge_config, token_config
from lossgate.core.family import family_size
from lossgate.model import ModelRolloutSpec, Phase
from lossgate.model.calibration import BRIER_CHECK
from tests.unit.test_calibration_wiring import BASELINE, CANARY_SAME, CANARY_WORSE, CalibratedMetrics
from tests.unit.test_tick_wiring import merged, run_ticks, start
from tests.unit.test_token_wiring import EQUAL, WORSE, TokenMetrics
from tests.unit.test_watch_tick import WATCHED

BOTH = {
    "analysis.guardrails": [{"name": "errors", "errorRate": {}, "margin": 0.01}],
    "analysis.calibration": {"gate": "Brier", "margin": 0.02},
    "analysis.tokenLoss": {"margin": 0.05, "maxTokensPerRequest": 100},
}


@dataclass
class BothMetrics(CalibratedMetrics, TokenMetrics):
    """The reliability counters and the token counters, each read on its own."""


def _run(metrics: BothMetrics, ticks: int = 30) -> Any:
    # The Brier gate and the token check only (the fake serves no guardrail counts)
    deps, objects = start({k: v for k, v in BOTH.items() if k != "analysis.guardrails"}, metrics)
    return run_ticks(deps, objects, ticks)


def test_the_family_counts_the_brier_gate_and_the_token_check() -> None:
    # Given the pooled loss, one guardrail, the Brier gate and the loss per token
    spec = ModelRolloutSpec.model_validate(merged(BOTH))
    # Then the family has four checks, each at alphaRollback / 4
    assert spec.analysis.family_checks == 4 == family_size(1, 0, brier=True, tokens=True)
    share = 0.01 / 4
    assert judge_config(spec).alpha_rollback == share
    checks = {g.config.name: g.config.alpha_rollback for g in guardrail_checks(spec)}
    assert checks == {"errors": share, BRIER_CHECK: share}
    tokens = token_config(spec)
    assert tokens is not None
    assert tokens.alpha_rollback == share


def test_both_are_read_and_shown_while_neither_regresses() -> None:
    # Given an equal canary on both calibration and loss per token
    metrics = BothMetrics(cal=(BASELINE, CANARY_SAME), tokens=EQUAL)
    status = _run(metrics, ticks=6)
    # Then both counters are read, both checks are shown, and status.calibration is reported
    assert metrics.calibration_reads
    assert metrics.token_reads
    assert {c.name for c in status.checks} >= {BRIER_CHECK, "tokenLoss"}
    assert status.calibration is not None
    assert status.phase.value == "Progressing"


def test_a_token_regression_rolls_back_beside_a_calibrated_canary() -> None:
    # Given a canary as calibrated as the baseline but 0.4 nats per token worse
    status = _run(BothMetrics(cal=(BASELINE, CANARY_SAME), tokens=WORSE))
    # Then the token check rolls it back; the Brier gate saw no regression
    assert status.phase.value == "RolledBack"
    verdicts = {c.name: c.verdict for c in status.checks}
    assert verdicts["tokenLoss"] == "Regression"
    assert verdicts[BRIER_CHECK] != "Regression"


def test_a_brier_regression_rolls_back_beside_an_equal_loss_per_token() -> None:
    # Given an equal loss per token and an overconfident canary (Brier +0.1, margin 0.02)
    status = _run(BothMetrics(cal=(BASELINE, CANARY_WORSE), tokens=EQUAL))
    # Then the Brier gate rolls it back, named in the message; the token check did not regress
    assert status.phase.value == "RolledBack"
    assert f"check {BRIER_CHECK}" in status.message
    verdicts = {c.name: c.verdict for c in status.checks}
    assert verdicts[BRIER_CHECK] == "Regression"
    assert verdicts["tokenLoss"] != "Regression"


def test_a_late_token_regression_rolls_back_in_the_post_promotion_watch() -> None:
    # Given a language model whose loss per token is equal, promoted into a watch with a 5% holdback
    over = {**WATCHED, "analysis.tokenLoss": {"margin": 0.05, "maxTokensPerRequest": 100}}
    metrics = BothMetrics(cal=(BASELINE, CANARY_SAME), tokens=EQUAL)
    deps, objects = start(over, metrics)
    status = run_ticks(deps, objects, 4)
    assert status.phase is Phase.WATCHING, status.message
    # When the token labels arriving in the watch show the promoted model 0.4 nats per token worse
    metrics.tokens = WORSE
    status = run_ticks(deps, objects, 30)
    # Then the token check finds it and the watch rolls back to the baseline
    assert status.phase is Phase.ROLLED_BACK, status.message
    assert "post-promotion watch" in status.message
    assert "tokenLoss" in status.message
    assert status.canary_weight == 0
