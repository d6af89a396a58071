"""Loss reads of many rollouts from one Prometheus at once: one query per series kind, split client-side.

Rollouts that read the default series (plain selectors of our exporter's metric names) over short
windows (the intervals closed since their last tick) are grouped by metric, tail bucket and namespace
label. Each group is read with one raw-sample query per kind whose matchers name every model and
version of the group (`model=~"a|b",version=~"v1|v2"`); the series are then split by their labels and
each rollout's are trimmed to exactly the window its own read would have fetched, so a batched read
returns bitwise what the single read returns. Anything else (user templates, a rebuild from a
rollout's start) is read on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.client import QueryFailed
from lossgate.adapters.prometheus.loss import KINDS, RAW_CHUNK_MS, LossReader, ReadPlan, _parse
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.ports import LossSeriesRef

BATCH_MAX_SPAN_MS = 30 * 60_000  # longer reads (a rebuild from the start) go alone: bounded answers
BATCH_MAX_MODELS = 100  # models per grouped query (keeps the URL and the regex small)

LossResult = list[IntervalStats] | Problem


@dataclass(frozen=True)
class LossRequest:
    ref: LossSeriesRef
    start: datetime
    end: datetime
    interval_s: float


def read_batch(reader: LossReader, requests: Sequence[LossRequest]) -> list[LossResult]:
    """The result of reader.read for every request, in order, with grouped queries where possible."""
    results: list[LossResult | None] = [None] * len(requests)
    groups: dict[tuple[str, str, str | None], list[tuple[int, ReadPlan]]] = {}
    for i, rq in enumerate(requests):
        plan = reader.plan(rq.ref, rq.start, rq.end, rq.interval_s)
        if not isinstance(plan, ReadPlan):
            results[i] = plan
        elif _groupable(reader, plan):
            key = (rq.ref.metric, rq.ref.tail_le, rq.ref.namespace if reader.config.namespace_label else None)
            groups.setdefault(key, []).append((i, plan))
        else:
            results[i] = _single(reader, rq)
    for members in groups.values():
        for chunk in _chunks(members):
            for i, result in _read_group(reader, chunk):
                results[i] = result
    return [r if r is not None else [] for r in results]


def _groupable(reader: LossReader, plan: ReadPlan) -> bool:
    lo, hi = reader.window(plan)
    ref = plan.ref
    templated = any((ref.count_template, ref.sum_template, ref.sumsq_template, ref.tail_template))
    return not templated and all(aq.raw for aq in plan.arms.values()) and hi - lo <= BATCH_MAX_SPAN_MS


def _chunks(members: list[tuple[int, ReadPlan]]) -> list[list[tuple[int, ReadPlan]]]:
    by_model: dict[str, list[tuple[int, ReadPlan]]] = {}
    for m in members:
        by_model.setdefault(m[1].ref.model, []).append(m)
    models = sorted(by_model)
    return [
        [m for model in models[j : j + BATCH_MAX_MODELS] for m in by_model[model]]
        for j in range(0, len(models), BATCH_MAX_MODELS)
    ]


def _read_group(reader: LossReader, members: list[tuple[int, ReadPlan]]) -> list[tuple[int, LossResult]]:
    windows = [reader.window(plan) for _, plan in members]
    lo, hi = min(w[0] for w in windows), max(w[1] for w in windows)
    first = members[0][1].ref
    models = [plan.ref.model for _, plan in members]
    versions = [v for _, plan in members for v in (plan.ref.baseline_version, plan.ref.canary_version)]
    namespace = first.namespace if reader.config.namespace_label else None
    queries = promql.loss_union_selectors(
        first.metric, models, versions, namespace, reader.config.namespace_label, first.tail_le
    )
    try:
        fetched = {kind: _raw(reader, queries[kind], lo, hi) for kind in KINDS}
    except QueryFailed as failed:
        return [(i, failed.problem) for i, _ in members]
    index: dict[tuple[str, str, str], list[counters.Series]] = {}
    for kind, series in fetched.items():
        for s in series:
            labels = dict(s.labels)
            index.setdefault((kind, labels.get("model", ""), labels.get("version", "")), []).append(s)
    out: list[tuple[int, LossResult]] = []
    for (i, plan), (w_lo, w_hi) in zip(members, windows, strict=True):
        arms: dict[str, dict[str, list[counters.Series]]] = {}
        for arm, version in (("baseline", plan.ref.baseline_version), ("canary", plan.ref.canary_version)):
            arms[arm] = {
                kind: _trimmed(index.get((kind, plan.ref.model, version), []), w_lo, w_hi)
                for kind in plan.arms[arm].queries
            }
        out.append((i, reader.finish(plan, arms)))
    return out


def _raw(reader: LossReader, selector: str, lo: int, hi: int) -> list[counters.Series]:
    """Every raw sample in (lo, hi] of the selected series, in bounded chunks."""
    chunks: list[counters.Series] = []
    while lo < hi:
        top = min(lo + RAW_CHUNK_MS, hi)
        chunks += _parse(reader.client.instant(promql.raw_samples(selector, top - lo), top / 1000))
        lo = top
    return counters.merge(chunks)


def _trimmed(series: list[counters.Series], lo: int, hi: int) -> list[counters.Series]:
    """The samples a single read of (lo, hi] would have fetched; series without any are absent."""
    out = []
    for s in series:
        kept = tuple((t, v) for t, v in s.samples if lo < t <= hi)
        if kept:
            out.append(counters.Series(s.labels, kept))
    return out


def _single(reader: LossReader, rq: LossRequest) -> LossResult:
    try:
        return reader.read(rq.ref, rq.start, rq.end, rq.interval_s)
    except QueryFailed as failed:
        return failed.problem
