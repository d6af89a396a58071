"""Known loss counters for the CLI tests: cumulative count/sum/squared_sum/bucket{le="4.6"} per arm,
one sample at each aligned instant, as OpenMetrics text for promtool, and the intervals they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lossgate.core.evidence import ArmStats, IntervalStats

METRIC = "model_prediction_loss"


@dataclass(frozen=True)
class ArmPlan:
    version: str
    n: int  # labelled predictions per interval (varied deterministically around this)
    mean: float  # mean loss per interval (nats)
    sd: float
    tail_every: int  # one loss above 4.6 nats per this many predictions


def _per_interval(plan: ArmPlan, k: int) -> tuple[float, float, float, float]:
    n = float(plan.n + (k * 37) % (plan.n // 4 + 1))
    mean = plan.mean + 0.01 * math.sin(k)  # shared wiggle (traffic mix), same for both arms
    return n, n * mean, n * (plan.sd**2 + mean**2), float(int(n) // plan.tail_every)


@dataclass(frozen=True)
class History:
    model: str
    start: int  # unix seconds of the first instant
    interval: int
    intervals: int
    baseline: ArmPlan
    canary: ArmPlan

    def cumulative(self, plan: ArmPlan) -> list[tuple[float, float, float, float]]:
        """(count, sum, squared sum, tail) at each instant t_k, from a non-zero starting value."""
        n, s, q, t = 10_000.0, 4_000.0, 5_000.0, 20.0
        out = [(n, s, q, t)]
        for k in range(self.intervals):
            dn, ds, dq, dt = _per_interval(plan, k)
            n, s, q, t = n + dn, s + ds, q + dq, t + dt
            out.append((n, s, q, t))
        return out

    def openmetrics(self) -> str:
        lines: list[str] = []
        for suffix, idx in (("_count", 0), ("_sum", 1), ("_squared_sum", 2), ("_bucket", 3)):
            lines.append(f"# TYPE {METRIC}{suffix} gauge")
            for plan in (self.baseline, self.canary):
                extra = ',le="4.6"' if suffix == "_bucket" else ""
                for k, c in enumerate(self.cumulative(plan)):
                    value = c[0] - c[3] if suffix == "_bucket" else c[idx]
                    labels = f'model="{self.model}",version="{plan.version}"{extra}'
                    lines.append(f"{METRIC}{suffix}{{{labels}}} {value!r} {self.start + k * self.interval}")
        return "\n".join(lines) + "\n# EOF\n"

    def expected(self, weight: int | None = None) -> list[IntervalStats]:
        """The intervals the adapter should read: differences of the cumulative values."""
        b, c = self.cumulative(self.baseline), self.cumulative(self.canary)

        def arm(cum: list[tuple[float, float, float, float]], k: int) -> ArmStats:
            return ArmStats(
                n=cum[k + 1][0] - cum[k][0],
                sum=cum[k + 1][1] - cum[k][1],
                sumsq=cum[k + 1][2] - cum[k][2],
                tail=(cum[k + 1][0] - (cum[k + 1][0] - cum[k + 1][3]))
                - (cum[k][0] - (cum[k][0] - cum[k][3])),
            )

        return [
            IntervalStats(
                float(self.start + k * self.interval),
                float(self.start + (k + 1) * self.interval),
                arm(b, k),
                arm(c, k),
                weight,
            )
            for k in range(self.intervals)
        ]
