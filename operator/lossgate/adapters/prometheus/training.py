"""Training-health series of one run, per rank, over a lookback (range queries at the caller's step).

Each rank's gauges are sampled on the query grid and collapsed to one row per training step (the
latest sample of that step), so `RankSeries` is aligned by step (for display, and for the gate when
the exporter is an old, gauge-only one). The counted series, every step exact, come from
training_counts.py. NaN and +-Inf are kept: a non-finite
loss or gradient norm is exactly what the health gate looks for.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from lossgate.adapters.prometheus import promql
from lossgate.adapters.prometheus.client import PromClient
from lossgate.adapters.prometheus.training_counts import CountsReader
from lossgate.core.evidence import Problem, RankSeries, TrainingRun
from lossgate.ports import MetricsErrorKind

MAX_POINTS = 10_000  # per range query (Prometheus refuses more than 11,000)
_NAN = math.nan


class TrainingReader:
    def __init__(self, client: PromClient) -> None:
        self.client = client
        self.counts = CountsReader(client)

    def read(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        start_s, end_s = start.timestamp(), end.timestamp()
        if step_s <= 0 or end_s <= start_s:
            return Problem(
                MetricsErrorKind.BAD_QUERY.value, f"invalid lookback: {start} .. {end}, step {step_s}s"
            )
        step = max(step_s, (end_s - start_s) / MAX_POINTS)
        first = end_s - math.floor((end_s - start_s) / step) * step  # grid ends at `end`: the latest sample
        data = {
            name: _by_rank(self.client.range(promql.training_selector(name, run), first, end_s, step))
            for name in promql.TRAINING_SERIES
        }
        where = f"Prometheus at {self.client.address}"
        if not data["loss"]:
            query = promql.training_selector("loss", run)
            msg = (
                f"no training series for run {run!r} at {where} in the lookback ({query}); does the "
                "training job export them (lossgate.instrument.TrainingExporter) under this run label?"
            )
            return Problem(MetricsErrorKind.NO_DATA.value, msg, {"query": query, "run": run})
        if not data["grad_norm"]:
            query = promql.training_selector("grad_norm", run)
            msg = f"run {run!r} exports training_loss but no gradient norms at {where} ({query})"
            return Problem(MetricsErrorKind.PARTIAL.value, msg, {"query": query, "run": run})
        ranks = sorted(set(data["loss"]) | set(data["grad_norm"]), key=_rank_order)
        series = tuple(_rank_series(rank, {name: d.get(rank) for name, d in data.items()}) for rank in ranks)
        range_ms = round((end_s - start_s) * 1000)
        counts = self.counts.read(run, start_s, end_s)  # every step, exact; () from an old exporter
        return TrainingRun(
            run=run,
            ranks=series,
            validation_loss=self._validation(run, range_ms, end_s),
            baseline_validation_loss=self._validation(baseline_run, range_ms, end_s)
            if baseline_run
            else None,
            fp16=any(r.loss_scale for r in series),
            counts=counts,
            exporter_outdated=not counts,
        )

    def _validation(self, run: str, range_ms: int, at_s: float) -> float | None:
        result = self.client.instant(promql.latest_validation_loss(run, range_ms), at_s)
        return float(result[0]["value"][1]) if result else None


def _by_rank(result: list[dict[str, Any]]) -> dict[str, dict[float, float]]:
    """rank -> {timestamp: value}; several series of one rank (scraped and pushed) are merged."""
    out: dict[str, dict[float, float]] = {}
    for item in result:
        rank = item.get("metric", {}).get("rank", "")
        out.setdefault(rank, {}).update((float(ts), float(v)) for ts, v in item.get("values", []))
    return out


def _rank_series(rank: str, metrics: dict[str, dict[float, float] | None]) -> RankSeries:
    present = {name: values for name, values in metrics.items() if values}
    times = sorted({t for name in ("loss", "grad_norm", "step") for t in present.get(name, {})})
    columns = ("step", "loss", "grad_norm", "nonfinite", "loss_scale")
    rows: list[list[float]] = []
    for t in times:
        row = [present[name].get(t, _NAN) if name in present else _NAN for name in columns]
        if rows and row[0] == rows[-1][0]:  # same step sampled again: keep the latest sample
            rows[-1] = row
        else:
            rows.append(row)
    col = {name: tuple(r[i] for r in rows) for i, name in enumerate(columns)}
    return RankSeries(
        rank=rank,
        steps=col["step"],
        loss=col["loss"],
        grad_norm=col["grad_norm"],
        nonfinite_total=col["nonfinite"] if "nonfinite" in present else (),
        loss_scale=col["loss_scale"] if "loss_scale" in present else (),
    )


def _rank_order(rank: str) -> tuple[int, str]:
    return (int(rank), "") if rank.isdigit() else (1 << 30, rank)
