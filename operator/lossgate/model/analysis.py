"""spec.analysis: where the evidence comes from and how it is judged (docs/judge.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from lossgate.conventions import CATASTROPHIC_LOSS_NATS, DEFAULT_LOSS_METRIC
from lossgate.model.base import ApiModel, cel, validations
from lossgate.model.calibration import CalibrationAnalysis
from lossgate.model.durations import Duration, PositiveDuration
from lossgate.model.guardrails import MAX_GUARDRAILS, Guardrail, PerClassLoss, unique_names_rule
from lossgate.model.token_loss import TokenLossAnalysis

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 (the pattern of a Secret's key name)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # most object names

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)]
Query = Annotated[str, Field(min_length=1, max_length=2048)]


def _open_unit(v: float) -> float:
    if not 0.0 < v < 1.0:
        raise ValueError(f"must be strictly between 0 and 1, got {v}")
    return v


def _positive(v: float) -> float:
    if not v > 0.0:
        raise ValueError(f"must be greater than 0 (nats of cross-entropy, e.g. 0.01), got {v}")
    return v


_ALPHA_RULE = cel(
    "self > 0.0 && self < 1.0", "a significance level must be strictly between 0 and 1, e.g. 0.01"
)
Alpha = Annotated[float, AfterValidator(_open_unit), Field(json_schema_extra=validations(_ALPHA_RULE))]
_MARGIN_RULE = cel("self > 0.0", "margin must be greater than 0 nats, e.g. 0.01")
Margin = Annotated[float, AfterValidator(_positive), Field(json_schema_extra=validations(_MARGIN_RULE))]
_RELATIVE_RULE = cel("self > 0.0 && self < 1.0", "relativeMargin must be strictly between 0 and 1, e.g. 0.02")
RelativeMargin = Annotated[
    float, AfterValidator(_open_unit), Field(json_schema_extra=validations(_RELATIVE_RULE))
]


class PromotionPolicy(StrEnum):
    NO_REGRESSION = "NoRegression"  # promote after the last step's quotas with no regression shown
    REQUIRE_NON_INFERIORITY = "RequireNonInferiority"  # promote only once "not worse" is shown


class UnavailableAction(StrEnum):
    HOLD = "Hold"
    ROLLBACK = "Rollback"


class SecretKeyRef(ApiModel):
    name: ObjectName
    key: SecretKey


class BasicAuthSecretRef(ApiModel):
    name: ObjectName
    username_key: SecretKey = "username"
    password_key: SecretKey = "password"  # noqa: S105 (the key's name in the Secret)


class PrometheusSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))",
                "spec.analysis.prometheus: set bearerTokenSecretRef or basicAuthSecretRef, not both",
            )
        )
    )

    address: str = Field(
        min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$", description="e.g. http://prometheus:9090"
    )
    bearer_token_secret_ref: SecretKeyRef | None = None
    basic_auth_secret_ref: BasicAuthSecretRef | None = None
    ca_secret_ref: SecretKeyRef | None = Field(default=None, description="CA bundle for https addresses.")
    insecure_skip_verify: bool = False
    timeout: PositiveDuration = Field(default="10s", validate_default=True)

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSource:
        if self.bearer_token_secret_ref is not None and self.basic_auth_secret_ref is not None:
            raise ValueError("bearerTokenSecretRef and basicAuthSecretRef are both set; fix: keep one")
        return self


class LossQueries(ApiModel):
    """PromQL templates for users whose metrics are named differently.

    Placeholders {model} and {version} are substituted with escaped label values.
    """

    count: Query = Field(description='Labelled predictions, e.g. sum(my_loss_count{model="{model}",...}).')
    sum: Query = Field(description="Sum of per-request loss.")
    sum_squares: Query = Field(description="Sum of squared per-request loss.")
    tail: Query | None = Field(default=None, description="Predictions with loss above catastrophicThreshold.")


class LossAnalysis(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.margin) != has(self.relativeMargin)",
                "spec.analysis.loss: set exactly one of margin (nats) or relativeMargin (fraction)",
            ),
            cel(
                "!(has(self.metric) && has(self.queries))",
                "spec.analysis.loss: set metric or queries, not both",
            ),
        )
    )

    metric: str | None = Field(
        default=None,
        max_length=200,
        pattern=METRIC_NAME,
        description=f"Histogram base name of per-request loss (default {DEFAULT_LOSS_METRIC}).",
    )
    queries: LossQueries | None = None
    margin: Margin | None = Field(default=None, description="Practical margin in nats (absolute).")
    relative_margin: RelativeMargin | None = Field(
        default=None, description="Practical margin as a fraction of the baseline's mean loss."
    )
    alpha_rollback: Alpha = Field(default=0.01, description="Level of the sequential regression test.")
    alpha_promote: Alpha = Field(default=0.05, description="Level of the sequential non-inferiority test.")
    min_samples_before_rollback: int = Field(
        default=1000, ge=0, le=1_000_000_000, description="Canary samples before a non-catastrophic rollback."
    )
    min_samples_before_promotion: int = Field(default=5000, ge=0, le=1_000_000_000)
    promotion_policy: PromotionPolicy = PromotionPolicy.NO_REGRESSION
    catastrophic_threshold: float = Field(
        default=CATASTROPHIC_LOSS_NATS, gt=0, le=100, description="Loss (nats) counted as tail."
    )
    catastrophic_ratio: float = Field(
        default=2.0,
        ge=1,
        le=1000,
        description="The guard's null: canary tail rate at most this times the baseline's.",
    )
    alpha_catastrophic: Alpha = Field(default=0.001, description="Level of the catastrophic-tail test.")
    per_class: PerClassLoss = Field(default=PerClassLoss(), description="Judge each `class` too.")

    @model_validator(mode="after")
    def _checks(self) -> LossAnalysis:
        if (self.margin is None) == (self.relative_margin is None):
            both = "margin and relativeMargin are both set" if self.margin is not None else "no margin is set"
            raise ValueError(
                f"{both}; fix: set exactly one of margin (nats, e.g. 0.01) or relativeMargin (e.g. 0.02)"
            )
        if self.metric is not None and self.queries is not None:
            raise ValueError(
                "metric and queries are both set; fix: keep metric (default names) or queries (PromQL)"
            )
        return self

    @property
    def effective_metric(self) -> str:
        return self.metric or DEFAULT_LOSS_METRIC

    def margin_for(self, baseline_mean: float | None) -> float | None:
        """Absolute margin in nats; None when relative and the baseline mean is not known yet."""
        if self.margin is not None:
            return self.margin
        if baseline_mean is None or self.relative_margin is None:
            return None
        return self.relative_margin * baseline_mean


class GradientHealth(ApiModel):
    """Bounds for the canary training run's gradient-health gate (docs/judge.md)."""

    enabled: bool = True
    allow_non_finite: bool = Field(
        default=False, description="true: non-finite applied steps warn, not fail."
    )
    max_grad_norm_spike: float = Field(
        default=10.0,
        gt=1,
        le=1e6,
        description="Hard bound: gradient norm / its trailing median (one step fails).",
    )
    max_rank_divergence: float = Field(
        default=0.2,
        gt=0,
        le=100,
        description="Relative gap of a flagged rank from the others' median (fails).",
    )
    grad_norm_spike_z: float = Field(default=6.0, gt=0, le=1000, description="Robust z of log grad norm.")
    max_spikes_per_1000_steps: float = Field(default=3.0, ge=0, le=1000)
    loss_spike_z: float = Field(default=7.0, gt=0, le=1000, description="Robust z of log loss.")
    rank_divergence_z: float = Field(
        default=3.0, gt=0, le=1000, description="Per rank, Bonferroni-corrected."
    )
    max_consecutive_skipped_steps: int = Field(
        default=10, ge=1, le=1_000_000, description="fp16 skipped steps."
    )
    loss_scale_drop_factor: float = Field(default=256.0, gt=1, le=1e12, description="fp16 only.")
    window_steps: int = Field(default=300, ge=10, le=100_000, description="Trailing window (200-500).")
    warmup_steps: int = Field(default=500, ge=0, le=100_000_000, description="Steps excluded at the start.")
    validation_margin: float = Field(
        default=0.02,
        gt=0,
        le=10,
        description="The canary run's validation loss may exceed the baseline's by this fraction.",
    )
    require_metrics: bool = Field(
        default=True,
        description="Treat unreadable training metrics like unavailable metrics (hold); false: ignore them.",
    )


class OnMetricsUnavailable(ApiModel):
    action: UnavailableAction = UnavailableAction.ROLLBACK
    after: Duration = Field(default="10m", validate_default=True)


class Analysis(ApiModel):
    interval: PositiveDuration = Field(default="30s", validate_default=True)
    prometheus: PrometheusSource
    loss: LossAnalysis
    gradient_health: GradientHealth = GradientHealth()
    on_metrics_unavailable: OnMetricsUnavailable = OnMetricsUnavailable()
    guardrails: list[Guardrail] = Field(
        default=[],
        max_length=MAX_GUARDRAILS,
        description="Error-rate and latency checks beside the loss; any regression rolls back.",
        json_schema_extra=validations(unique_names_rule()),
    )
    calibration: CalibrationAnalysis | None = Field(
        default=None, description="Report each arm's ECE and MCE; optionally gate on the Brier score."
    )
    token_loss: TokenLossAnalysis | None = Field(
        default=None, description="A language model's mean NLL per token, judged beside the loss."
    )

    @field_validator("guardrails")
    @classmethod
    def _unique_guardrails(cls, v: list[Guardrail]) -> list[Guardrail]:
        names = [g.name for g in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names {dup} are repeated; fix: give each guardrail a unique name")
        return v

    @property
    def family_checks(self) -> int:
        """Checks that share alphaRollback (core/family.py): pooled loss, guardrails, class slots, the
        Brier gate (calibration.gate) and the loss per token (tokenLoss)."""
        slots = self.loss.per_class.max_classes if self.loss.per_class.enabled else 0
        brier = 1 if self.calibration is not None and self.calibration.gated else 0
        tokens = 1 if self.token_loss is not None else 0
        return 1 + len(self.guardrails) + slots + brier + tokens
