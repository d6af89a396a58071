"""spec.analysis.tokenLoss: a language model's loss per token, judged beside the per-request loss
(docs/judge.md, "Language models: loss per token"; the counters in docs/metrics.md)."""

from __future__ import annotations

from pydantic import Field

from lossgate.conventions import DEFAULT_TOKEN_METRIC
from lossgate.model.base import ApiModel, cel, validations

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"


class TokenLossAnalysis(ApiModel):
    """Mean NLL per token (sum of token NLL / tokens, per arm): canary minus baseline at most `margin`
    nats per token, i.e. the canary's perplexity at most exp(margin) times the baseline's."""

    margin: float = Field(
        gt=0,
        le=10,
        description="Nats per token; a perplexity ratio of exp(margin) (0.01 = 1.005% higher perplexity).",
        json_schema_extra=validations(cel("self > 0.0", "tokenLoss.margin must be > 0 nats per token")),
    )
    metric: str = Field(
        default=DEFAULT_TOKEN_METRIC,
        max_length=200,
        pattern=METRIC_NAME,
        description="Base name of the token counters (<metric>_requests_total, _nats_total, ...).",
    )
    max_tokens_per_request: int = Field(
        default=1024,
        ge=1,
        le=10_000_000,
        description="The most tokens one reference continuation may have: the bound the test rests on "
        "(the recorder truncates longer ones). The bets shrink with it: keep it near the real maximum.",
    )
    warmup_requests: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="Labelled requests per arm that only seed the delta method's plug-ins before any bet.",
    )
    min_requests_before_rollback: int = Field(
        default=0, ge=0, le=1_000_000_000, description="Labelled canary requests before it may roll back."
    )
    min_requests_before_promotion: int = Field(default=0, ge=0, le=1_000_000_000)
