"""The label joiner's coverage and delay series for the two arms of a rollout (docs/joiner.md).

Reads the counters' values at `start` and at `end` (instant queries) and takes the differences:
model_predictions_total and model_prediction_loss_count per arm (label coverage), and the buckets of
model_prediction_label_delay_seconds of both arms together (its 90th percentile). The joiner's
counters are durable (no resets), so the difference is exact; unlike increase(), a change just after
`start` is not lost for want of an earlier sample inside the window.
"""

from __future__ import annotations

import math
from datetime import datetime

from lossgate.adapters.prometheus import promql
from lossgate.adapters.prometheus.client import PromClient, QueryFailed
from lossgate.core.evidence import Problem
from lossgate.core.label_checks import Coverage, LabelEvidence, histogram_quantile
from lossgate.ports import LossSeriesRef

DELAY_METRIC = "model_prediction_label_delay_seconds"


def read_label_evidence(
    client: PromClient, ref: LossSeriesRef, start: datetime, end: datetime
) -> LabelEvidence | Problem:
    t0, t1 = start.timestamp(), end.timestamp()
    versions = {"baseline": ref.baseline_version, "canary": ref.canary_version}

    def grown(query: str, by: str) -> dict[str, float]:
        """Per value of label `by` ("" for a plain sum): the query's value at end minus at start."""
        at = [
            {r["metric"].get(by, ""): float(r["value"][1]) for r in client.instant(query, t)}
            for t in (t0, t1)
        ]
        return {k: v - at[0].get(k, 0.0) for k, v in at[1].items()}

    def arm(metric: str, version: str) -> float:
        sel = promql.selector(metric, {"model": ref.model, "version": version})
        return grown(f"sum({sel})", "").get("", 0.0)

    try:
        cov = {
            name: Coverage(arm("model_predictions_total", v), arm("model_prediction_loss_count", v))
            for name, v in versions.items()
        }
        sel = promql.selector_any(
            f"{DELAY_METRIC}_bucket", {"model": ref.model}, {"version": list(versions.values())}
        )
        buckets = sorted((float(le), c) for le, c in grown(f"sum by (le) ({sel})", "le").items())
    except QueryFailed as failed:
        return failed.problem
    finite = [(b, c) for b, c in buckets if math.isfinite(b)]
    inf = [c for b, c in buckets if not math.isfinite(b)]
    p90 = None
    if finite and inf:
        p90 = histogram_quantile(0.9, [b for b, _ in finite], [c for _, c in finite] + inf)
    return LabelEvidence(cov["baseline"], cov["canary"], p90)
