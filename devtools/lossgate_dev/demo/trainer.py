"""The canary's training run for the demo: real data-parallel training, its metrics backfilled.

Two ranks train a softmax regression on their shards of the digits training half; gradients are
averaged across ranks every step (an all-reduce), as with DDP. Each rank's per-step loss, local
gradient norm and non-finite count are what lossgate.instrument.TrainingExporter exports live; a
canary's run has finished before its rollout starts, so the demo writes the run's history as
OpenMetrics with timestamps and Prometheus loads it with `promtool tsdb create-blocks-from`.

`nan_at` makes rank 1's gradients NaN from that step on (a diverged run), which the operator's
gradient-health gate must catch before any traffic moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits

from lossgate.adapters.prometheus.training_counts import counted_names
from lossgate.instrument import TrainingExporter
from lossgate.instrument.step_stats import GateSettings


@dataclass
class RankLog:
    rank: int
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)  # cumulative count


@dataclass
class RunLog:
    run: str
    ranks: list[RankLog]
    validation_loss: float


def _softmax_xent(
    w: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.int64]
) -> tuple[float, NDArray[np.float64]]:
    z = x @ w
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean())
    p[np.arange(len(y)), y] -= 1.0
    return loss, x.T @ p / len(y)


def train(run: str, ranks: int = 2, steps: int = 400, nan_at: int | None = None, seed: int = 0) -> RunLog:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x, y = x[order], y[order].astype(np.int64)
    held = len(y) // 5
    xv, yv, x, y = x[:held], y[:held], x[held:], y[held:]
    shards = [(x[r::ranks], y[r::ranks]) for r in range(ranks)]
    w = np.zeros((x.shape[1], 10))
    logs = [RankLog(r) for r in range(ranks)]
    lr, batch = 0.5, 64
    with np.errstate(all="ignore"):  # a diverged run is the point of the nan_at scenario
        for step in range(steps):
            grads = []
            for r, (xs, ys) in enumerate(shards):
                idx = rng.integers(0, len(ys), batch)
                loss, g = _softmax_xent(w, xs[idx], ys[idx])
                if nan_at is not None and r == 1 and step >= nan_at:
                    g = g * np.nan
                norm = float(np.linalg.norm(g))
                bad = not (np.isfinite(loss) and np.isfinite(norm))
                log = logs[r]
                log.loss.append(loss)
                log.grad_norm.append(norm)
                log.nonfinite.append((log.nonfinite[-1] if log.nonfinite else 0) + int(bad))
                grads.append(g)
            w = w - lr * np.mean(grads, axis=0)  # the all-reduce: every rank applies the mean gradient
        val, _ = _softmax_xent(w, xv, yv)
    return RunLog(run, logs, val)


def counted(log: RunLog, times: list[float], warmup_steps: float, every: int = 10) -> list[str]:
    """The counted series a live TrainingExporter would export (every step fed to it), sampled every
    `every` steps and at the last: counters, so the operator's differences stay exact. Typed
    `unknown` (one family per sample name): OpenMetrics then takes any sample name as it is."""
    by_name: dict[str, list[str]] = {}
    names = set(counted_names())
    for r in log.ranks:
        exporter = TrainingExporter(log.run, r.rank, settings=GateSettings(warmup_steps=warmup_steps))
        for i, t in enumerate(times):
            bad = r.nonfinite[i] > (r.nonfinite[i - 1] if i else 0)
            exporter.on_step(i, r.loss[i], r.grad_norm[i], nonfinite=bad)
            if i % every and i != len(times) - 1:
                continue
            for fam in exporter.collect():
                for s in fam.samples:
                    if s.name in names:
                        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                        by_name.setdefault(s.name, []).append(f"{s.name}{{{labels}}} {_num(s.value)} {t:.3f}")
    out: list[str] = []
    for name, lines in by_name.items():
        out.append(f"# TYPE {name} unknown")
        out += lines
    return out


def openmetrics(
    log: RunLog, end_time: float, seconds_per_step: float = 2.0, warmup_steps: float = 50.0
) -> str:
    """The run's metrics as OpenMetrics text with timestamps, one sample per step, ending at end_time."""
    n = len(log.ranks[0].loss)
    times = [end_time - (n - 1 - i) * seconds_per_step for i in range(n)]
    out: list[str] = []

    def family(name: str, kind: str, values_of: object, suffix: str = "") -> None:
        out.append(f"# TYPE {name} {kind}")
        for r in log.ranks:
            labels = f'{{run="{log.run}",rank="{r.rank}"}}'
            for i, t in enumerate(times):
                out.append(f"{name}{suffix}{labels} {_num(values_of(r, i))} {t:.3f}")  # type: ignore[operator]

    family("training_loss", "gauge", lambda r, i: r.loss[i])
    family("training_grad_norm", "gauge", lambda r, i: r.grad_norm[i])
    family("training_step", "gauge", lambda r, i: i)
    family("training_nonfinite_steps", "counter", lambda r, i: r.nonfinite[i], "_total")
    out += counted(log, times, warmup_steps)
    out.append("# TYPE validation_loss gauge")
    out.append(f'validation_loss{{run="{log.run}",rank="0"}} {_num(log.validation_loss)} {times[-1]:.3f}')
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _num(v: float) -> str:
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))
