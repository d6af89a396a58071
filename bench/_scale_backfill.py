"""OpenMetrics history for the per-tick cost at rollout ages 1 h and 24 h: one model's raw loss
counters, as Prometheus would have scraped them from P pods per version every S seconds, written
for `promtool tsdb create-blocks-from openmetrics` (lossgate_dev.devenv.prom.Prometheus.backfill)."""

from __future__ import annotations

import math

import numpy as np

MAX_LOSS = -math.log(1e-6)


def loss_history(
    model: str,
    metric: str,
    start: float,
    end: float,
    pods: int = 10,
    scrape_s: float = 15.0,
    rate_per_pod: float = 2.0,
    mean_loss: float = 0.3,
    seed: int = 1,
) -> str:
    """Cumulative _count, _sum, _squared_sum, _bucket{le="4.6"} and _created per (version, pod),
    sampled every scrape_s from start to end; per-request losses drawn exactly (exponential)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    families: dict[str, list[str]] = {
        f"{metric}_{k}": [] for k in ("count", "sum", "squared_sum", "bucket", "created")
    }
    for version in ("v1", "v2"):
        for pod in range(pods):
            offset = (pod * 1.37) % scrape_s  # pods are scraped at different phases
            times = np.arange(start + offset, end, scrape_s)
            n = rng.poisson(rate_per_pod * scrape_s, size=len(times))
            idx = np.repeat(np.arange(len(times)), n)
            loss = np.minimum(rng.exponential(mean_loss, size=len(idx)), MAX_LOSS)
            count = np.cumsum(n)
            s = np.cumsum(np.bincount(idx, weights=loss, minlength=len(times)))
            q = np.cumsum(np.bincount(idx, weights=loss * loss, minlength=len(times)))
            b = np.cumsum(np.bincount(idx, weights=(loss <= 4.6).astype(float), minlength=len(times)))
            where = f'instance="10.0.{version[1]}.{pod}:8080",job="serving"'
            lb = f'{where},model="{model}",pod="p{pod}",version="{version}"'
            tstr = [f"{t:.3f}" for t in times.tolist()]
            families[f"{metric}_count"] += [
                f"{metric}_count{{{lb}}} {c} {t}" for c, t in zip(count.tolist(), tstr, strict=True)
            ]
            families[f"{metric}_sum"] += [
                f"{metric}_sum{{{lb}}} {v!r} {t}" for v, t in zip(s.tolist(), tstr, strict=True)
            ]
            families[f"{metric}_squared_sum"] += [
                f"{metric}_squared_sum{{{lb}}} {v!r} {t}" for v, t in zip(q.tolist(), tstr, strict=True)
            ]
            families[f"{metric}_bucket"] += [
                f'{metric}_bucket{{{lb},le="4.6"}} {int(v)} {t}'
                for v, t in zip(b.tolist(), tstr, strict=True)
            ]
            created = f"{start:.3f}"
            families[f"{metric}_created"] += [f"{metric}_created{{{lb}}} {created} {t}" for t in tstr]
    for name, lines in families.items():
        out.append(f"# TYPE {name} gauge")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"
