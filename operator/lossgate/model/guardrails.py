"""spec.analysis.guardrails[] and spec.analysis.loss.perClass: checks beside the pooled loss
(docs/judge.md, "Guardrails"; default metric names in docs/metrics.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from lossgate.model.base import ApiModel, cel, validations

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
CHECK_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
Query = Annotated[str, Field(min_length=1, max_length=2048)]
MAX_GUARDRAILS = 16

# The defaults: the common HTTP metric names, labelled with model and version like the loss series.
DEFAULT_REQUESTS_METRIC = "http_requests_total"
DEFAULT_ERROR_CODES = "5.."  # a regex on the `code` label: server errors
DEFAULT_LATENCY_METRIC = "http_request_duration_seconds"


def _one_margin(where: str) -> list[dict[str, str]]:
    return [
        cel(
            "has(self.margin) != has(self.relativeMargin)",
            f"{where}: set exactly one of margin or relativeMargin",
        )
    ]


class ErrorRateQueries(ApiModel):
    """PromQL templates of one arm's counters ({model}, {version}, {namespace}: escaped label values)."""

    bad: Query = Field(description='Failed requests, e.g. reqs_total{version="{version}",code=~"5.."}.')
    total: Query = Field(description="All requests.")


class ErrorRateGuardrail(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!(has(self.metric) && has(self.queries))", "errorRate: set metric or queries, not both")
        )
    )

    metric: str | None = Field(
        default=None,
        max_length=200,
        pattern=METRIC_NAME,
        description=f"Request counter with a `code` label (default {DEFAULT_REQUESTS_METRIC}; "
        f'errors are code=~"{DEFAULT_ERROR_CODES}").',
    )
    queries: ErrorRateQueries | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ErrorRateGuardrail:
        if self.metric is not None and self.queries is not None:
            raise ValueError("metric and queries are both set; fix: keep metric (default names) or queries")
        return self


class LatencyGuardrail(ApiModel):
    """A latency histogram, judged as the fraction of requests slower than `thresholdSeconds` (an
    exact proportion from the bucket with that `le`), or as the mean from _sum/_count with every
    request's latency bounded by `timeoutSeconds` (the bound the test needs; the server's timeout)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.thresholdSeconds) != has(self.timeoutSeconds)",
                "latency: set exactly one of thresholdSeconds (fraction slower) or timeoutSeconds (mean)",
            )
        )
    )

    metric: str = Field(
        default=DEFAULT_LATENCY_METRIC,
        max_length=200,
        pattern=METRIC_NAME,
        description=f"Histogram base name (default {DEFAULT_LATENCY_METRIC}).",
    )
    threshold_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="A bucket bound (le) of the histogram, e.g. 0.5."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Judge the mean latency; no request takes longer."
    )

    @model_validator(mode="after")
    def _one_mode(self) -> LatencyGuardrail:
        if (self.threshold_seconds is None) == (self.timeout_seconds is None):
            raise ValueError(
                "thresholdSeconds and timeoutSeconds: not exactly one is set; fix: set thresholdSeconds "
                "(judge the fraction slower) or timeoutSeconds (judge the mean)"
            )
        return self

    @property
    def bound(self) -> float:
        """Largest outcome per request: 1 for the fraction slower, the timeout for the mean."""
        return self.timeout_seconds if self.timeout_seconds is not None else 1.0


class Guardrail(ApiModel):
    """One check beside the loss: roll back when the canary is worse by more than the margin."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.errorRate) != has(self.latency)",
                "spec.analysis.guardrails[]: set exactly one of errorRate or latency",
            ),
            *_one_margin("spec.analysis.guardrails[]"),
        )
    )

    name: str = Field(min_length=1, max_length=63, pattern=CHECK_NAME, description="Named in events.")
    error_rate: ErrorRateGuardrail | None = None
    latency: LatencyGuardrail | None = None
    margin: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Absolute: a fraction of requests (0.002 = 0.2 points) or, for a mean latency, seconds.",
    )
    relative_margin: float | None = Field(
        default=None, gt=0, le=100, description="A fraction of the baseline's rate or mean (0.5 = 50%)."
    )

    @model_validator(mode="after")
    def _checks(self) -> Guardrail:
        name = self.name
        if (self.error_rate is None) == (self.latency is None):
            raise ValueError(f"guardrail {name}: not exactly one kind; fix: set errorRate or latency")
        if (self.margin is None) == (self.relative_margin is None):
            raise ValueError(
                f"guardrail {name}: not exactly one margin; fix: set margin (absolute) or relativeMargin"
            )
        proportion = self.latency is None or self.latency.threshold_seconds is not None
        if proportion and self.margin is not None and self.margin >= 1:
            raise ValueError(
                f"guardrail {name}: margin {self.margin} is not a fraction of requests; fix: use e.g. 0.002"
            )
        return self

    @property
    def bound(self) -> float:
        return self.latency.bound if self.latency is not None else 1.0


class PerClassLoss(ApiModel):
    """Judge the loss of each `class` label value too, with the pooled judge's test and quotas."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.margin) && has(self.relativeMargin))",
                "spec.analysis.loss.perClass: set margin or relativeMargin, not both",
            )
        )
    )

    enabled: bool = False
    min_samples_per_class: int = Field(
        default=1000,
        ge=1,
        le=1_000_000_000,
        description="Labelled canary samples of a class before it is judged; below, it is shown as "
        "unjudged and never blocks a promotion (the pooled judge decides).",
    )
    max_classes: int = Field(
        default=8,
        ge=1,
        le=16,  # each slot keeps a judge's state (about 200 numbers) in status
        description="Classes judged (the largest first); each takes a share of alphaRollback.",
    )
    margin: float | None = Field(default=None, gt=0, le=14, description="Nats; default: the loss's margin.")
    relative_margin: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_margin(self) -> PerClassLoss:
        if self.margin is not None and self.relative_margin is not None:
            raise ValueError("margin and relativeMargin are both set; fix: keep one (or neither: the loss's)")
        return self


def unique_names_rule() -> dict[str, str]:
    return cel(
        "self.all(x, self.exists_one(y, y.name == x.name))",
        "spec.analysis.guardrails: names must be unique",
    )
