"""Per-interval, per-arm token counters of a language model (spec.analysis.tokenLoss).

Read like the guardrails' counters (guardrails.py): raw samples at aligned instants, differenced
client-side per series with restarts (and `_created`) handled, summed over series (pods, classes).
"""

from __future__ import annotations

from datetime import datetime

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.guardrails import _instants
from lossgate.adapters.prometheus.loss import ArmQueries, LossReader
from lossgate.conventions import TOKEN_COUNTER_SUFFIXES
from lossgate.core.evidence import Problem
from lossgate.core.token_fold import TokenCounts, TokenInterval
from lossgate.ports import MetricsErrorKind, TokenSeriesRef

KINDS = ("n", "nll", "tokens", "nll_sq", "tokens_sq", "nll_tokens")  # TokenCounts' fields, in order


def token_queries(ref: TokenSeriesRef, version: str, namespace_label: str | None) -> dict[str, str]:
    """kind -> plain selector of one arm's counter, plus "created" (when its series began)."""
    labels = {"model": ref.model, "version": version}
    if namespace_label and ref.namespace:
        labels[namespace_label] = ref.namespace
    out = {
        kind: promql.selector(f"{ref.metric}_{suffix}", labels)
        for kind, suffix in zip(KINDS, TOKEN_COUNTER_SUFFIXES, strict=True)
    }
    out["created"] = promql.selector(f"{ref.metric}_requests_created", labels)
    return out


class TokenReader:
    def __init__(self, loss: LossReader) -> None:
        self.loss = loss
        self.config = loss.config

    def read(
        self, ref: TokenSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[TokenInterval] | Problem:
        instants = _instants(start, end, interval_s)
        if isinstance(instants, Problem) or not instants:
            return instants if isinstance(instants, Problem) else []
        lookback_ms = round(self.config.lookback_s * 1000)
        per_arm: dict[str, list[TokenCounts]] = {}
        for arm, version in (("baseline", ref.baseline_version), ("canary", ref.canary_version)):
            queries = token_queries(ref, version, self.config.namespace_label)
            aq = ArmQueries(arm, queries, True)
            series = {kind: self.loss._fetch(aq, kind, instants) for kind in queries}
            if not series["n"]:
                kind = MetricsErrorKind.NO_DATA if arm == "baseline" else MetricsErrorKind.PARTIAL
                msg = (
                    f"tokenLoss: no {arm} series for {queries['n']} at Prometheus at "
                    f"{self.loss.client.address}; check that the model servers (TokenLossRecorder) or the "
                    "joiner export the token counters (spec.analysis.tokenLoss.metric) with model and "
                    "version labels"
                )
                return Problem(kind.value, msg, {"query": queries["n"]})
            created = series.pop("created", [])
            resets = counters.reset_points([s for group in series.values() for s in group], created)
            totals = [
                counters.interval_totals(series[kind], instants, resets, lookback_ms, created)
                for kind in KINDS
            ]
            per_arm[arm] = [TokenCounts(*column) for column in zip(*totals, strict=True)]
        return [
            TokenInterval(
                instants[i] / 1000, instants[i + 1] / 1000, per_arm["baseline"][i], per_arm["canary"][i]
            )
            for i in range(len(instants) - 1)
        ]
