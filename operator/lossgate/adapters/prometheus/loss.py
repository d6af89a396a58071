"""Per-interval, per-arm (n, sum, sum of squares, tail) of per-request loss, from the raw counters.

Instants are aligned: t_k = start + k * interval (whole milliseconds), for every k with t_k <= end.
Plain selectors (the defaults, and user templates of the form `name{...}`) are read as raw samples
(`selector[range]` evaluated at the window's end, in chunks); other user expressions are evaluated with
a range query on a grid that contains every t_k. Either way the counters are differenced client-side
per series (counters.py) and summed over series (pods, instances, classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.client import PromClient, PrometheusConfig
from lossgate.core.evidence import ArmStats, IntervalStats, Problem
from lossgate.ports import LossSeriesRef, MetricsErrorKind

KINDS = ("count", "sum", "sumsq", "bucket", "created")
RAW_CHUNK_MS = 3_600_000  # one raw-sample query covers at most an hour (bounded answers)
GRID_STEP_MAX_MS = 15_000  # range-query resolution for non-selector templates
MAX_POINTS = 10_000  # per range query (Prometheus refuses more than 11,000)


@dataclass(frozen=True)
class ArmQueries:
    arm: str
    queries: dict[str, str]  # kind -> PromQL (bucket/created may be absent)
    raw: bool  # every query is a plain selector (read raw samples)


def arm_queries(ref: LossSeriesRef, arm: str, version: str, config: PrometheusConfig) -> ArmQueries:
    """The default selectors, or the user's templates with escaped values (TemplateError if unsafe)."""
    q = promql.loss_selectors(
        ref.metric, ref.model, version, ref.namespace, config.namespace_label, ref.tail_le
    )
    user = {"count": ref.count_template, "sum": ref.sum_template, "sumsq": ref.sumsq_template,
            "bucket": ref.tail_template}  # fmt: skip
    if any(user.values()):
        values = {"model": ref.model, "version": version, "namespace": ref.namespace, "metric": ref.metric}
        q.pop("created")  # only meaningful for our own exporter's series
        for kind, template in user.items():
            if template:
                q[kind] = promql.render(template, **values)
    raw = all(promql.is_plain_selector(v) for v in q.values())
    return ArmQueries(arm, q, raw)


@dataclass(frozen=True)
class ReadPlan:
    """One read: the aligned instants (unix ms) and each arm's queries."""

    ref: LossSeriesRef
    instants: list[int]
    arms: dict[str, ArmQueries]


class LossReader:
    def __init__(self, client: PromClient, config: PrometheusConfig) -> None:
        self.client = client
        self.config = config

    def read(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        plan = self.plan(ref, start, end, interval_s)
        if not isinstance(plan, ReadPlan):
            return plan
        fetched = {arm: {kind: self._fetch(aq, kind, plan.instants) for kind in aq.queries}
                   for arm, aq in plan.arms.items()}  # fmt: skip
        return self.finish(plan, fetched)

    def plan(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> ReadPlan | list[IntervalStats] | Problem:
        """The instants and queries of one read; [] while no interval has closed, a Problem if invalid."""
        start_ms, end_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
        interval_ms = round(interval_s * 1000)
        if interval_ms < 1 or end_ms < start_ms:
            return _bad(f"invalid analysis window: start {start}, end {end}, interval {interval_s}s")
        k = (end_ms - start_ms) // interval_ms
        if k == 0:
            return []  # no interval has closed yet
        instants = [start_ms + i * interval_ms for i in range(k + 1)]
        arms = {}
        for arm, version in (("baseline", ref.baseline_version), ("canary", ref.canary_version)):
            try:
                arms[arm] = arm_queries(ref, arm, version, self.config)
            except promql.TemplateError as err:
                return _bad(f"{arm} loss template: {err}")
        return ReadPlan(ref, instants, arms)

    def window(self, plan: ReadPlan) -> tuple[int, int]:
        """The raw samples one read uses: (first instant - lookback, last instant], in unix ms."""
        return plan.instants[0] - round(self.config.lookback_s * 1000), plan.instants[-1]

    def finish(
        self, plan: ReadPlan, fetched: dict[str, dict[str, list[counters.Series]]]
    ) -> list[IntervalStats] | Problem:
        """Per-interval totals of both arms from the series fetched for them."""
        instants = plan.instants
        arms = {arm: (plan.arms[arm], fetched[arm]) for arm in plan.arms}
        problem = self._check(arms, instants)
        if problem:
            return problem
        lookback_ms = round(self.config.lookback_s * 1000)
        totals = {arm: _totals(series, instants, lookback_ms) for arm, (_, series) in arms.items()}
        return [
            IntervalStats(
                instants[i] / 1000, instants[i + 1] / 1000, totals["baseline"][i], totals["canary"][i]
            )
            for i in range(len(instants) - 1)
        ]

    def _fetch(self, aq: ArmQueries, kind: str, instants: list[int]) -> list[counters.Series]:
        query = aq.queries[kind]
        first, last = instants[0], instants[-1]
        chunks: list[counters.Series] = []
        if aq.raw:
            lo = first - round(self.config.lookback_s * 1000)
            while lo < last:
                hi = min(lo + RAW_CHUNK_MS, last)
                result = self.client.instant(promql.raw_samples(query, hi - lo), hi / 1000)
                chunks += _parse(result)
                lo = hi
        else:
            interval = instants[1] - instants[0]
            per = -(-interval // GRID_STEP_MAX_MS)  # grid points per interval, so every t_k is on the grid
            while interval % per:
                per += 1
            step = interval // per
            span = max(1, int(MAX_POINTS // per)) * interval  # whole intervals per query
            lo = first
            while lo < last:
                hi = min(lo + span, last)
                chunks += _parse(self.client.range(query, lo / 1000, hi / 1000, step / 1000))
                lo = hi
        return counters.merge(chunks)

    def _check(self, arms: dict[str, Any], instants: list[int]) -> Problem | None:
        missing = [arm for arm, (_, series) in arms.items() if not series["count"]]
        window = f"between {instants[0] / 1000:.3f} and {instants[-1] / 1000:.3f} (unix s)"
        where = f"Prometheus at {self.client.address}"
        details = {f"{arm}_count_query": aq.queries["count"] for arm, (aq, _) in arms.items()}
        if len(missing) == 2:
            msg = (
                f"no series at {where} {window} for either arm ({details['baseline_count_query']}, "
                f"{details['canary_count_query']}); check that the model servers export them "
                "(lossgate.instrument.LossRecorder), that Prometheus scrapes them, and the model and "
                "version labels"
            )
            return Problem(MetricsErrorKind.NO_DATA.value, msg, details)
        if missing:
            arm = missing[0]
            msg = (
                f"only one arm has data at {where} {window}: no series for the {arm} "
                f"({details[f'{arm}_count_query']}); is the {arm} serving and labelled with this version?"
            )
            return Problem(MetricsErrorKind.PARTIAL.value, msg, details | {"missing_arm": arm})
        for arm, (aq, series) in arms.items():
            absent = [kind for kind in ("sum", "sumsq") if not series[kind]]
            if absent:
                queries = ", ".join(aq.queries[kind] for kind in absent)
                msg = (
                    f"the {arm} has a count but no {'/'.join(absent)} series at {where} ({queries}): "
                    "export the squared-sum counter (lossgate.instrument.LossRecorder) or give sumsqTemplate"
                )
                return Problem(MetricsErrorKind.NO_DATA.value, msg, details | {"missing": ",".join(absent)})
        return None


def _totals(
    series: dict[str, list[counters.Series]], instants: list[int], lookback_ms: int
) -> list[ArmStats]:
    counted = [s for kind in ("count", "sum", "sumsq", "bucket") for s in series.get(kind, [])]
    created = series.get("created", [])
    resets = counters.reset_points(counted, created)
    per = {
        kind: counters.interval_totals(series.get(kind, []), instants, resets, lookback_ms, created)
        for kind in KINDS[:4]
    }
    has_bucket = bool(series.get("bucket"))
    return [
        ArmStats(n=n, sum=s, sumsq=q, tail=max(n - b, 0.0) if has_bucket else 0.0)
        for n, s, q, b in zip(per["count"], per["sum"], per["sumsq"], per["bucket"], strict=True)
    ]


def _parse(result: list[dict[str, Any]]) -> list[counters.Series]:
    out = []
    for item in result:
        values = item.get("values") or ([item["value"]] if "value" in item else [])
        samples = [(round(float(ts) * 1000), float(v)) for ts, v in values]
        out.append(counters.make_series(item.get("metric", {}), samples))
    return out


def _bad(message: str) -> Problem:
    return Problem(MetricsErrorKind.BAD_QUERY.value, message)
