"""Per-interval, per-arm request counts for the guardrails, and the loss split by `class`.

Read like the loss counters (loss.py, counters.py): raw samples at aligned instants, differenced
client-side per series with restarts handled, summed over series. A guardrail's outcome per interval:

- errorRate: (total requests, failed requests);
- latency with thresholdSeconds: (_count, _count - _bucket{le=threshold}), the requests slower;
- latency with timeoutSeconds: (_count, _sum), seconds of latency.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.client import PrometheusConfig
from lossgate.adapters.prometheus.loss import ArmQueries, LossReader, ReadPlan, _totals
from lossgate.conventions import le_label
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.guardrail import CountInterval, Counts
from lossgate.ports import GuardrailSeriesRef, LossSeriesRef, MetricsErrorKind

ERROR_CODES = "5.."


def guardrail_queries(ref: GuardrailSeriesRef, version: str, config: PrometheusConfig) -> dict[str, str]:
    """kind -> PromQL for one arm: "total" and one of "bad", "fast" (requests within the threshold),
    "sum". User templates are filled with escaped values (TemplateError if unsafe)."""
    base: dict[str, str] = {"model": ref.model, "version": version}
    if config.namespace_label and ref.namespace:
        base[config.namespace_label] = ref.namespace
    if ref.mode == "errors":
        if ref.bad_template and ref.total_template:
            values = {"model": ref.model, "version": version, "namespace": ref.namespace}
            return {
                "total": promql.render(ref.total_template, **values),
                "bad": promql.render(ref.bad_template, **values),
            }
        total = promql.selector(ref.metric, base)
        # `_created` says when a series began, so a code="500" series first seen mid-rollout counts
        # from 0 (counters.py); prometheus_client exports it beside every counter.
        created = promql.selector(f"{ref.metric.removesuffix('_total')}_created", base)
        bad = f"{total[:-1]},code=~{promql.quote(ERROR_CODES)}}}"
        return {"total": total, "bad": bad, "created": created}
    count = promql.selector(f"{ref.metric}_count", base)
    created = promql.selector(f"{ref.metric}_created", base)
    if ref.mode == "slower":
        fast = promql.selector(f"{ref.metric}_bucket", base | {"le": le_label(ref.threshold)})
        return {"total": count, "fast": fast, "created": created}
    return {"total": count, "sum": promql.selector(f"{ref.metric}_sum", base), "created": created}


class GuardrailReader:
    def __init__(self, loss: LossReader) -> None:
        self.loss = loss
        self.config = loss.config

    def read(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem:
        instants = _instants(start, end, interval_s)
        if isinstance(instants, Problem) or not instants:
            return instants if isinstance(instants, Problem) else []
        lookback_ms = round(self.config.lookback_s * 1000)
        per_arm: dict[str, list[Counts]] = {}
        for arm, version in (("baseline", ref.baseline_version), ("canary", ref.canary_version)):
            try:
                queries = guardrail_queries(ref, version, self.config)
            except promql.TemplateError as err:
                return Problem(MetricsErrorKind.BAD_QUERY.value, f"guardrail {ref.name}, {arm}: {err}")
            aq = ArmQueries(arm, queries, all(promql.is_plain_selector(q) for q in queries.values()))
            series = {kind: self.loss._fetch(aq, kind, instants) for kind in queries}
            if not series["total"]:
                msg = (
                    f"guardrail {ref.name}: no {arm} series for {queries['total']} at Prometheus at "
                    f"{self.loss.client.address}; check that the model servers export it (spec.analysis."
                    "guardrails) and its model and version labels"
                )
                kind = MetricsErrorKind.NO_DATA if arm == "baseline" else MetricsErrorKind.PARTIAL
                return Problem(kind.value, msg, {"guardrail": ref.name, "query": queries["total"]})
            created = series.pop("created", [])
            resets = counters.reset_points([s for group in series.values() for s in group], created)
            totals = {
                kind: counters.interval_totals(group, instants, resets, lookback_ms, created)
                for kind, group in series.items()
            }
            n = totals["total"]
            if "bad" in totals:
                s = totals["bad"]
            elif "fast" in totals:
                s = [max(a - b, 0.0) for a, b in zip(n, totals["fast"], strict=True)]
            else:
                s = totals["sum"]
            per_arm[arm] = [Counts(a, b) for a, b in zip(n, s, strict=True)]
        return [
            CountInterval(
                instants[i] / 1000, instants[i + 1] / 1000, per_arm["baseline"][i], per_arm["canary"][i]
            )
            for i in range(len(instants) - 1)
        ]

    def read_classes(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem:
        """The loss intervals of each value of the `class` label (series without one are left out)."""
        plan = self.loss.plan(ref, start, end, interval_s)
        if not isinstance(plan, ReadPlan):
            return plan if isinstance(plan, Problem) else {}
        lookback_ms = round(self.config.lookback_s * 1000)
        arms: dict[str, dict[str, list[counters.Series]]] = {}
        instants = plan.instants
        for arm, aq in plan.arms.items():
            arms[arm] = {kind: self.loss._fetch(aq, kind, instants) for kind in aq.queries}
        by_class: dict[str, dict[str, dict[str, list[counters.Series]]]] = defaultdict(
            lambda: {"baseline": defaultdict(list), "canary": defaultdict(list)}
        )
        for arm, kinds in arms.items():
            for kind, group in kinds.items():
                for s in group:
                    label = dict(s.labels).get("class")
                    if label is not None:
                        by_class[label][arm][kind].append(s)
        out: dict[str, list[IntervalStats]] = {}
        for label, both in sorted(by_class.items()):
            b = _totals(both["baseline"], instants, lookback_ms)
            c = _totals(both["canary"], instants, lookback_ms)
            out[label] = [
                IntervalStats(instants[i] / 1000, instants[i + 1] / 1000, b[i], c[i])
                for i in range(len(instants) - 1)
            ]
        return out


def _instants(start: datetime, end: datetime, interval_s: float) -> list[int] | Problem:
    start_ms, end_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    interval_ms = round(interval_s * 1000)
    if interval_ms < 1 or end_ms < start_ms:
        return Problem(MetricsErrorKind.BAD_QUERY.value, f"invalid analysis window: {start} to {end}")
    k = (end_ms - start_ms) // interval_ms
    return [start_ms + i * interval_ms for i in range(k + 1)] if k else []
