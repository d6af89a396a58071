"""Per-interval paired counters (n, sum of d, sum of d^2, the baseline's loss sum) from the joiner's
`<metric>_paired_*` series (docs/joiner.md, "Mirrored traffic"), differenced client-side like the
unpaired counters (counters.py: aligned instants, restarts by drops or a changed `_created`).

The joiner exports each pair in both orientations with monotone sums, so d's sum over an interval is
the increase of `_paired_sum{version=canary, baseline_version=baseline}` minus that of the flipped
series; both share their `_created`, so a joiner restart is seen on each.
"""

from __future__ import annotations

from datetime import datetime

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.client import PrometheusConfig
from lossgate.adapters.prometheus.loss import ArmQueries, LossReader
from lossgate.core.evidence import Problem
from lossgate.core.paired import PairedStats
from lossgate.ports import LossSeriesRef, MetricsErrorKind


def paired_queries(ref: LossSeriesRef, config: PrometheusConfig) -> tuple[ArmQueries, ArmQueries]:
    """Raw selectors of the canary orientation (count, sum, sumsq, created) and of the baseline's
    (sum, created)."""
    m = f"{ref.metric}_paired"

    def base(version: str, baseline: str) -> dict[str, str]:
        b = {"model": ref.model, "version": version, "baseline_version": baseline}
        if config.namespace_label and ref.namespace:
            b[config.namespace_label] = ref.namespace
        return b

    c, b = base(ref.canary_version, ref.baseline_version), base(ref.baseline_version, ref.canary_version)
    canary = {
        "count": promql.selector(f"{m}_count", c),
        "sum": promql.selector(f"{m}_sum", c),
        "sumsq": promql.selector(f"{m}_diff_squared_sum", c),
        "created": promql.selector(f"{m}_created", c),
    }
    baseline = {"sum": promql.selector(f"{m}_sum", b), "created": promql.selector(f"{m}_created", b)}
    return ArmQueries("canary", canary, True), ArmQueries("baseline", baseline, True)


def read_paired(
    reader: LossReader, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[PairedStats] | Problem:
    """One PairedStats per aligned interval closed by `end` ([] while none has); NO_DATA naming the
    queries when the joiner exports no pairs for these versions."""
    start_ms, end_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    interval_ms = round(interval_s * 1000)
    if interval_ms < 1 or end_ms < start_ms:
        return Problem(
            MetricsErrorKind.BAD_QUERY.value,
            f"invalid paired window: start {start}, end {end}, {interval_s}s",
        )
    k = (end_ms - start_ms) // interval_ms
    if k == 0:
        return []
    instants = [start_ms + i * interval_ms for i in range(k + 1)]
    canary_q, baseline_q = paired_queries(ref, reader.config)
    got = {kind: reader._fetch(canary_q, kind, instants) for kind in canary_q.queries}
    flip = {kind: reader._fetch(baseline_q, kind, instants) for kind in baseline_q.queries}
    missing = [
        q.queries[kind] for q, s, kind in ((canary_q, got, "count"), (baseline_q, flip, "sum")) if not s[kind]
    ]
    if missing:
        return Problem(
            MetricsErrorKind.NO_DATA.value,
            f"no paired series at Prometheus at {reader.client.address} ({', '.join(missing)}): the "
            "shadow phase needs the joiner's paired counters; check that the router mirrors requests "
            "to the canary, that both versions' predictions reach the joiner with the same request ids, "
            "and that labels arrive",
            {"paired_count_query": canary_q.queries["count"]},
        )
    lookback = round(reader.config.lookback_s * 1000)
    created = got["created"] + flip["created"]
    counted = got["count"] + got["sum"] + got["sumsq"] + flip["sum"]
    resets = counters.reset_points(counted, created)

    def totals(series: list[counters.Series], born: list[counters.Series]) -> list[float]:
        return counters.interval_totals(series, instants, resets, lookback, born)

    n = totals(got["count"], got["created"])
    sum_c, sumsq = totals(got["sum"], got["created"]), totals(got["sumsq"], got["created"])
    sum_b = totals(flip["sum"], flip["created"])
    return [PairedStats(n[i], sum_c[i] - sum_b[i], sumsq[i], sum_b[i]) for i in range(k)]
