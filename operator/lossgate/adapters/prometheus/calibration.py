"""Per-interval, per-arm reliability counters per confidence bin (docs/metrics.md, "Calibration").

Read like the loss counters (loss.py, counters.py): raw samples at aligned instants, differenced
client-side per series with restarts handled (`_count_created` per bin), summed over series (pods,
classes). One raw-sample query per counter kind covers both arms and every bin
(`version=~"baseline|canary"`); the series are split by their `version` and `bin` labels here, so a
tick costs five queries whatever the number of bins.
"""

from __future__ import annotations

from datetime import datetime

from lossgate.adapters.prometheus import counters, promql
from lossgate.adapters.prometheus.loss import ArmQueries, LossReader
from lossgate.conventions import CALIBRATION_BINS
from lossgate.core.calibration import Bins, CalibrationInterval
from lossgate.core.evidence import Problem
from lossgate.ports import CalibrationSeriesRef, MetricsErrorKind

KINDS = ("count", "confidence", "correct", "brier")


def calibration_queries(ref: CalibrationSeriesRef, namespace_label: str | None) -> dict[str, str]:
    """kind -> the selector of both arms' series (and "created")."""
    equal = {"model": ref.model}
    if namespace_label and ref.namespace:
        equal[namespace_label] = ref.namespace
    one_of = {"version": [ref.baseline_version, ref.canary_version]}
    out = {k: promql.selector_any(f"{ref.metric}_{k}_total", equal, one_of) for k in KINDS}
    out["created"] = promql.selector_any(f"{ref.metric}_count_created", equal, one_of)
    return out


def read_calibration(
    loss: LossReader, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[CalibrationInterval] | Problem:
    start_ms, end_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    interval_ms = round(interval_s * 1000)
    if interval_ms < 1 or end_ms < start_ms:
        return Problem(MetricsErrorKind.BAD_QUERY.value, f"invalid analysis window: {start} to {end}")
    k = (end_ms - start_ms) // interval_ms
    if not k:
        return []
    instants = [start_ms + i * interval_ms for i in range(k + 1)]
    try:
        queries = calibration_queries(ref, loss.config.namespace_label)
    except promql.TemplateError as err:
        return Problem(MetricsErrorKind.BAD_QUERY.value, f"spec.analysis.calibration: {err}")
    aq = ArmQueries("both", queries, raw=True)
    fetched = {kind: loss._fetch(aq, kind, instants) for kind in queries}
    versions = {"baseline": ref.baseline_version, "canary": ref.canary_version}
    lookback_ms = round(loss.config.lookback_s * 1000)
    arms: dict[str, list[Bins]] = {}
    for arm, version in versions.items():
        mine = {
            kind: [s for s in group if dict(s.labels).get("version") == version]
            for kind, group in fetched.items()
        }
        if not mine["count"]:
            msg = (
                f"spec.analysis.calibration: no {arm} series {queries['count']} (version {version}) at "
                f"Prometheus at {loss.client.address}; check that the model servers or the joiner export "
                "the reliability counters (lossgate >= this version) with model and version labels"
            )
            why = MetricsErrorKind.NO_DATA if arm == "baseline" else MetricsErrorKind.PARTIAL
            return Problem(why.value, msg, {"query": queries["count"]})
        created = mine.pop("created", [])
        resets = counters.reset_points([s for group in mine.values() for s in group], created)
        per_kind: dict[str, list[list[float]]] = {}
        for kind, group in mine.items():
            by_bin: list[list[counters.Series]] = [[] for _ in range(CALIBRATION_BINS)]
            for s in group:
                b = _bin(dict(s.labels).get("bin"))
                if b is not None:
                    by_bin[b].append(s)
            # [bin][interval]
            per_kind[kind] = [
                counters.interval_totals(g, instants, resets, lookback_ms, created) for g in by_bin
            ]
        arms[arm] = [
            Bins(*(tuple(per_kind[kind][b][i] for b in range(CALIBRATION_BINS)) for kind in KINDS))
            for i in range(k)
        ]
    return [
        CalibrationInterval(
            instants[i] / 1000, instants[i + 1] / 1000, arms["baseline"][i], arms["canary"][i]
        )
        for i in range(k)
    ]


def _bin(label: str | None) -> int | None:
    if label is None or not label.isdigit():
        return None
    b = int(label)
    return b if 0 <= b < CALIBRATION_BINS else None
