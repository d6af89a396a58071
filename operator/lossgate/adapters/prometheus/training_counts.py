"""The counted training series of one run (lossgate.instrument.step_stats), per rank, exact over a
window: each counter's value at the window's end minus its value at the start, the way the loss
counters are differenced (counters.py), never `increase()`.

- value at t: the last sample at or before t (PromQL's instant selector, 5-minute staleness); a
  series with no value at the start began inside the window and counts from 0;
- a rank whose `training_steps_total` dropped in the window (the job restarted: one exporter, all of
  its counters restart together) is read from its raw samples and differenced segment by segment
  (counters.interval_parts);
- the divergence rule's running means: each rank's latest training_log_window_mean, the mean of its
  log loss / log gradient norm over its last windowSteps steps (ranks of one job step in lockstep);
- one rank exported twice (scraped and pushed) is counted once (the larger increase);
- `le` is normalised (`10` and `10.0` are one bound: a Pushgateway re-exposes bounds Go-style).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.client import PromClient
from lossgate.conventions import le_label
from lossgate.core.evidence import RankCounts, count_key

COUNTERS = (
    "training_steps_total",
    "training_assessed_steps_total",
    "training_nonfinite_steps_total",
    "training_skipped_steps_total",
    "training_loss_scale_decreases_total",
    "training_loss_scale_floor_steps_total",
    "training_spikes_unrecovered_total",
    "training_skip_runs_total",
    "training_loss_scale_collapse_steps_total",
)
HISTOGRAMS = ("training_grad_norm_z", "training_loss_z", "training_grad_norm_ratio", "training_spike_bursts")
GAUGES = (
    "training_spikes_recovering",
    "training_gate_setting",
    "training_log_window_mean",
    "training_log_window_count",
)
LOG_SUMS = ("training_log_loss", "training_log_grad_norm")
KEY_LABELS = ("le", "metric", "z", "grad_z", "loss_z", "limit", "drop", "floor", "name")
RAW_CHUNK_MS = 3_600_000
Values = dict[str, dict[str, float]]  # rank -> key -> value


def counted_names() -> list[str]:
    names = list(COUNTERS)
    for h in HISTOGRAMS:
        names += [f"{h}_bucket", f"{h}_count", f"{h}_sum"]
    for s in LOG_SUMS:
        names += [f"{s}_count", f"{s}_sum", f"{s}_squared_sum"]
    return names + list(GAUGES)


def counted_selector(run: str, rank: str | None = None, names: list[str] | None = None) -> str:
    """All counted series of the run (a __name__ regex of literal names: nothing user-given in it)."""
    matchers = {"run": run} | ({"rank": rank} if rank is not None else {})
    inner = ",".join(f"{k}={promql.quote(v)}" for k, v in matchers.items())
    return f'{{__name__=~"{"|".join(names or counted_names())}",{inner}}}'


def _key(metric: dict[str, str]) -> str:
    labels = {k: metric[k] for k in KEY_LABELS if k in metric}
    if "le" in labels:  # "10" (a Pushgateway / Go client re-exposing) and "10.0" are the same bound
        with contextlib.suppress(ValueError):
            labels["le"] = le_label(float(labels["le"]))
    return count_key(metric.get("__name__", ""), **labels)


def _values(result: list[dict[str, Any]]) -> Values:
    out: Values = {}
    for item in result:
        metric = item.get("metric", {})
        value = float(item["value"][1])
        if math.isfinite(value):
            row = out.setdefault(metric.get("rank", ""), {})
            key = _key(metric)
            row[key] = max(row.get(key, -math.inf), value)
    return out


class CountsReader:
    def __init__(self, client: PromClient) -> None:
        self.client = client

    def read(self, run: str, start_s: float, end_s: float) -> tuple[RankCounts, ...]:
        """() when the run has no counted series (an old, gauge-only exporter)."""
        sel = counted_selector(run)
        end = _values(self.client.instant(sel, end_s))
        if not end:
            return ()
        start = _values(self.client.instant(sel, start_s))
        range_ms = max(1, round((end_s - start_s) * 1000))
        steps_sel = promql.selector("training_steps_total", {"run": run})
        restarted = {
            item.get("metric", {}).get("rank", "")
            for item in self.client.instant(f"resets({steps_sel}[{range_ms}ms])", end_s)
            if float(item["value"][1]) > 0
        }
        out = []
        for rank in sorted(end, key=_rank_order):
            if rank in restarted:
                totals = self._raw_totals(run, rank, start_s, end_s)
            else:
                totals = _differences(end[rank], start.get(rank, {}))
            latest = {k: v for k, v in end[rank].items() if k.split("{", 1)[0] in GAUGES}
            out.append(RankCounts(rank, totals, latest, _divergence(end[rank])))
        return tuple(out)

    def _raw_totals(self, run: str, rank: str, start_s: float, end_s: float) -> dict[str, float]:
        names = [n for n in counted_names() if n not in GAUGES]
        sel = counted_selector(run, rank, names)
        lo, hi = round(start_s * 1000), round(end_s * 1000)
        chunks: list[counters.Series] = []
        t = lo - RAW_CHUNK_MS // 12  # the value at the start: a sample up to 5 minutes before it
        while t < hi:
            top = min(t + RAW_CHUNK_MS, hi)
            for item in self.client.instant(promql.raw_samples(sel, top - t), top / 1000):
                samples = [(round(float(ts) * 1000), float(v)) for ts, v in item.get("values", [])]
                chunks.append(counters.make_series(item.get("metric", {}), samples))
            t = top
        series = counters.merge(chunks)
        resets = counters.reset_points(series)
        totals: dict[str, float] = {}
        for s in series:
            parts = counters.interval_parts(s, [lo, hi], resets.get(s.group, set()))
            key = _key(dict(s.labels))
            totals[key] = max(totals.get(key, -math.inf), math.fsum(parts[0]) if parts else 0.0)
        return totals


def counts_from_exposition(texts: list[str]) -> tuple[RankCounts, ...]:
    """RankCounts straight from exporters' /metrics texts, as a first read would give (every series
    new: counted from 0). For checks without a Prometheus (hack/gpu) and tests."""
    values: Values = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                metric = {"__name__": s.name, **s.labels}
                if math.isfinite(s.value):
                    values.setdefault(metric.get("rank", ""), {})[_key(metric)] = float(s.value)
    return tuple(
        RankCounts(
            rank,
            _differences(row, {}),
            {k: v for k, v in row.items() if k.split("{", 1)[0] in GAUGES},
            _divergence(row),
        )
        for rank, row in sorted(values.items(), key=lambda kv: _rank_order(kv[0]))
    )


def _divergence(end: dict[str, float]) -> dict[str, tuple[float, float]]:
    """metric -> (mean of the log values over the rank's last windowSteps steps, finite steps in it)."""
    out = {}
    for metric in ("loss", "grad_norm"):
        mean = end.get(count_key("training_log_window_mean", metric=metric))
        n = end.get(count_key("training_log_window_count", metric=metric), 0.0)
        if mean is not None and n > 0:
            out[metric] = (mean, n)
    return out


def _differences(end: dict[str, float], start: dict[str, float]) -> dict[str, float]:
    return {k: v - start.get(k, 0.0) for k, v in end.items() if k.split("{", 1)[0] not in GAUGES}


def _rank_order(rank: str) -> tuple[int, str]:
    return (int(rank), "") if rank.isdigit() else (1 << 30, rank)
