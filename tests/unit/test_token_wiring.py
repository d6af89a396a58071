"""Whole ticks with spec.analysis.tokenLoss against a recording fake of Prometheus: each spec field
is set to a value that changes the outcome and the test shows the change (the real-server read is in
tests/adapters/test_prom_tokens.py). A guard fails when a field is added without a test here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from lossgate.adapters.spec_refs import judge_config, token_config
from lossgate.core.evidence import Problem
from lossgate.core.token_fold import TokenCounts, TokenInterval
from lossgate.model import ModelRolloutSpec
from lossgate.model.token_loss import TokenLossAnalysis
from lossgate.ports import TokenSeriesRef
from tests.unit.test_tick_wiring import RecordingMetrics, merged, run_ticks, start


def _arm(n: int, r: float, seed: int) -> TokenCounts:
    """The counters of n requests (20-80 tokens) at r nats per token, with a spread between requests."""
    rng = np.random.default_rng(seed)
    t = rng.integers(20, 81, n).astype(float)
    s = r * t * rng.uniform(0.6, 1.4, n)
    return TokenCounts(
        n, float(s.sum()), float(t.sum()), float((s * s).sum()), float((t * t).sum()), float((s * t).sum())
    )


EQUAL = (_arm(400, 2.0, 1), _arm(100, 2.0, 2))
WORSE = (_arm(400, 2.0, 1), _arm(100, 2.4, 2))  # 0.4 nats per token: perplexity x1.49


@dataclass
class TokenMetrics(RecordingMetrics):
    tokens: tuple[TokenCounts, TokenCounts] = EQUAL
    token_reads: list[TokenSeriesRef] = field(default_factory=list)

    def token_intervals(
        self, ref: TokenSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[TokenInterval] | Problem:
        self.token_reads.append(ref)
        s, e = start.timestamp(), end.timestamp()
        k = math.floor((e - s) / interval_s + 1e-9)
        b, c = self.tokens
        return [TokenInterval(s + i * interval_s, s + (i + 1) * interval_s, b, c) for i in range(k)]


def _run(token_loss: dict[str, Any], tokens: tuple[TokenCounts, TokenCounts], ticks: int = 30) -> Any:
    # The requests here have at most 80 tokens: a bound of 100 keeps the bets large (docs/judge.md)
    token_loss = {"maxTokensPerRequest": 100} | token_loss
    metrics = TokenMetrics(tokens=tokens)
    deps, objects = start({"analysis.tokenLoss": token_loss}, metrics)
    return run_ticks(deps, objects, ticks), metrics


def test_a_worse_loss_per_token_rolls_back_naming_the_check() -> None:
    # Given the per-request loss equal and the canary 0.4 nats per token worse, margin 0.05
    status, metrics = _run({"margin": 0.05}, WORSE)
    # Then the token check rolls the rollout back and shows both arms' NLL per token
    assert status.phase.value == "RolledBack"
    assert "tokenLoss" in status.message
    (check,) = status.checks
    assert (check.kind, check.verdict) == ("tokenLoss", "Regression")
    assert check.mean_baseline is not None
    assert check.mean_canary is not None
    assert 0.3 < check.mean_canary - check.mean_baseline < 0.5
    assert check.cs_low is not None
    assert check.cs_low > 0.05
    # And the read asked for the default counters of the rollout's versions
    assert {(r.metric, r.baseline_version, r.canary_version) for r in metrics.token_reads} == {
        ("model_token_nll", "v1", "v2")
    }


def test_each_field_changes_the_outcome() -> None:
    outcomes = {}
    for key, over in {
        "margin 0.05": {"margin": 0.05},
        "margin 1 nat": {"margin": 1.0},
        "maxTokens below the requests": {"margin": 0.05, "maxTokensPerRequest": 10},
        "warm-up never reached": {"margin": 0.05, "warmupRequests": 10_000_000},
        "rollback quota never reached": {"margin": 0.05, "minRequestsBeforeRollback": 10_000_000},
    }.items():
        outcomes[key] = _run(over, WORSE)[0].phase.value
    # Then only the first rolls back: a wide margin tolerates 0.4 nats, counters that break the token
    # bound are no evidence, and the warm-up and quota hold the verdict
    assert outcomes == {
        "margin 0.05": "RolledBack",
        "margin 1 nat": "Progressing",
        "maxTokens below the requests": "Progressing",
        "warm-up never reached": "Progressing",
        "rollback quota never reached": "Progressing",
    }


def test_metric_reaches_the_read() -> None:
    _, metrics = _run({"margin": 0.05, "metric": "my_lm_tokens"}, EQUAL, ticks=3)
    assert {r.metric for r in metrics.token_reads} == {"my_lm_tokens"}


def test_quotas_and_alpha_share_reach_the_config() -> None:
    # Given a token check beside the pooled loss
    over = {"margin": 0.02, "minRequestsBeforeRollback": 7, "minRequestsBeforePromotion": 11}
    spec = ModelRolloutSpec.model_validate(merged({"analysis.tokenLoss": over}))
    config = token_config(spec)
    # Then both quotas reach it and alphaRollback is split over the two checks
    assert config is not None
    assert (config.min_requests_before_rollback, config.min_requests_before_promote) == (7.0, 11.0)
    assert spec.analysis.family_checks == 2
    assert config.alpha_rollback == judge_config(spec).alpha_rollback == 0.01 / 2
    assert (config.null.margin, config.null.max_tokens, config.null.warmup) == (0.02, 1024.0, 200.0)


def test_every_field_is_covered_here() -> None:
    # A new tokenLoss field must be shown to reach the code above before this list grows
    assert set(TokenLossAnalysis.model_fields) == {
        "margin", "metric", "max_tokens_per_request", "warmup_requests", "min_requests_before_rollback",
        "min_requests_before_promotion",
    }  # fmt: skip
