"""The gradient-health gate on counted series: every training step, exact over the window.

The exporter (lossgate.instrument.step_stats) computes on every step, per rank, what the sampled gate
computes on observed points: the trailing robust z of log gradient norm and log loss, the ratio of
the norm to its trailing median, spike events and how many fall in 1000 steps, unrecovered spikes,
skipped fp16 steps and loss-scale collapse, and running sums of log values. The adapter hands over
their increases over the window (RankCounts); here each rule of core.health reads its exact count
for the CR's threshold, so "per 1000 steps" means steps again, and a one-step spike between two
scrapes is counted. Reported maxima (max_grad_norm_ratio, max_grad_norm_z) are the largest bucket
bound exceeded: lower bounds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lossgate.conventions import le_label
from lossgate.core.evidence import RankCounts, TrainingRun, count_key
from lossgate.core.health_rules import MAD_TO_SD, bonferroni_threshold

if TYPE_CHECKING:  # core.health dispatches here: a runtime import would be a cycle
    from lossgate.core.health import HealthConfig

Findings = tuple[list[str], list[str], list[str]]  # fails, warns, notes
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class CountedRank:
    nonfinite: int
    grad_spikes: int
    loss_spikes: int
    max_z: float
    max_ratio: float
    skips: int
    assessed: int
    collapse: bool


def _total(r: RankCounts, name: str, **labels: str) -> float | None:
    v = r.totals.get(count_key(name, **labels))
    return None if v is None else max(v, 0.0)


def exceeding(r: RankCounts, hist: str, bound: float, **labels: str) -> float | None:
    """Observations of the histogram above `bound` in the window; None without that bucket."""
    count = _total(r, f"{hist}_count", **labels)
    below = _total(r, f"{hist}_bucket", le=le_label(bound), **labels)
    return None if count is None or below is None else max(count - below, 0.0)


def _labels(key: str) -> tuple[str, dict[str, str]]:
    name, _, inner = key.partition("{")
    return name, dict(_LABEL.findall(inner))


def largest_exceeded(r: RankCounts, hist: str, **labels: str) -> float:
    """The largest finite bucket bound with observations above it (0 when none)."""
    count = _total(r, f"{hist}_count", **labels) or 0.0
    best = 0.0
    for key, below in r.totals.items():
        name, got = _labels(key)
        le = got.pop("le", None)
        if (
            name == f"{hist}_bucket"
            and got == labels
            and le not in (None, "+Inf")
            and count - max(below, 0.0) > 0
        ):
            best = max(best, float(le or 0.0))
    return best


MISSING = "the exporter does not count"


def _missing(out: Findings, rank: str, what: str, fix: str) -> None:
    """A threshold of the CR the exporter has no series for: that rule cannot be judged (UNKNOWN)."""
    out[2].append(f"rank {rank}: {MISSING} {what}; {fix}")


def assess_rank(r: RankCounts, cfg: HealthConfig, fp16: bool, out: Findings) -> CountedRank:  # noqa: C901
    """The per-rank rules of core.health on counts."""
    fails, warns, _ = out
    name = f"rank {r.rank}"
    for setting, want in (("window", cfg.window), ("warmup_steps", cfg.warmup_steps)):
        have = r.latest.get(count_key("training_gate_setting", name=setting))
        if have is not None and have != want:
            warns.append(
                f"{name}: the exporter counts with {setting} {have:g}, the rollout asks {want:g}; "
                f"pass GateSettings({setting}={want:g}) to the TrainingExporter"
            )
    steps = round(_total(r, "training_steps_total") or 0.0)
    nonfinite = _total(r, "training_nonfinite_steps_total") or 0.0
    skipped = _total(r, "training_skipped_steps_total") or 0.0
    applied = round(max(nonfinite - skipped, 0.0))
    if applied > 0:
        msg = (
            f"{name}: {applied} applied step(s) with non-finite loss or gradients (of {steps} steps counted)"
        )
        (warns if cfg.allow_nonfinite else fails).append(msg)

    ratio = exceeding(r, "training_grad_norm_ratio", cfg.max_grad_norm_spike)
    max_ratio = largest_exceeded(r, "training_grad_norm_ratio")
    if ratio is None:
        _missing(
            out,
            r.rank,
            f"gradient-norm ratio bucket le={le_label(cfg.max_grad_norm_spike)}",
            "add maxGradNormSpike to GateSettings(max_grad_norm_spike=...)",
        )
    elif ratio > 0:
        fails.append(
            f"{name}: gradient norm over {cfg.max_grad_norm_spike:g}x its trailing median on {ratio:.0f} "
            f"of {steps} steps (every step counted)"
        )
    spikes: dict[str, int] = {}
    for label, metric, z in (
        ("gradient-norm", "grad_norm", cfg.grad_norm_spike_z),
        ("loss", "loss", cfg.loss_spike_z),
    ):
        key = {"metric": metric, "z": le_label(z)}
        events = _total(r, "training_spike_bursts_count", **key)
        if events is None:
            _missing(
                out,
                r.rank,
                f"{label} spike counts for z={le_label(z)}",
                f"add it to GateSettings({metric}_spike_z=...)",
            )
            continue
        spikes[metric] = round(events)
        over = exceeding(r, "training_spike_bursts", float(math.floor(cfg.spikes_per_1000)), **key)
        warn_at = max(math.ceil(cfg.warn_spikes_per_1000) - 1, 0)
        near = exceeding(r, "training_spike_bursts", float(warn_at), **key) if warn_at > 0 else events
        most = round(largest_exceeded(r, "training_spike_bursts", **key)) + 1 if events else 0
        if over is None or near is None:
            _missing(
                out,
                r.rank,
                f"{label} burst bucket for maxSpikesPer1000Steps={cfg.spikes_per_1000:g}",
                "use an integer up to 20",
            )
        elif over > 0:
            fails.append(
                f"{name}: {most} or more {label} spikes within 1000 steps "
                f"(more than {cfg.spikes_per_1000:g}; every step counted)"
            )
        elif near > 0:
            warns.append(f"{name}: {most} or more {label} spikes within 1000 steps")

    pair = {"grad_z": le_label(cfg.grad_norm_spike_z), "loss_z": le_label(cfg.loss_spike_z)}
    unrecovered = _total(r, "training_spikes_unrecovered_total", **pair)
    if unrecovered is not None and unrecovered > 0:
        fails.append(
            f"{name}: loss did not recover within {cfg.recovery_steps} steps of {unrecovered:.0f} spike(s)"
        )
    pending = r.latest.get(count_key("training_spikes_recovering", **pair), 0.0)
    if pending > 0:
        warns.append(f"{name}: loss has not yet recovered from {pending:.0f} recent spike(s)")

    collapse = False
    if fp16 or skipped > 0 or _total(r, "training_loss_scale_decreases_total"):
        runs = _total(r, "training_skip_runs_total", limit=str(cfg.max_consecutive_skips))
        floor = _total(r, "training_loss_scale_floor_steps_total", floor=le_label(cfg.min_loss_scale))
        drop = _total(r, "training_loss_scale_collapse_steps_total", drop=le_label(cfg.loss_scale_drop))
        if runs:
            fails.append(
                f"{name}: {cfg.max_consecutive_skips} or more consecutive skipped fp16 steps "
                f"({runs:.0f} time(s))"
            )
        if floor:
            fails.append(
                f"{name}: fp16 loss scale at its floor ({cfg.min_loss_scale:g}) on {floor:.0f} step(s)"
            )
        if drop:
            fails.append(
                f"{name}: fp16 loss scale over {cfg.loss_scale_drop:g}x below its running median "
                f"on {drop:.0f} step(s)"
            )
        collapse = bool(runs or floor or drop)
    return CountedRank(
        nonfinite=applied,
        grad_spikes=spikes.get("grad_norm", 0),
        loss_spikes=spikes.get("loss", 0),
        max_z=largest_exceeded(r, "training_grad_norm_z"),
        max_ratio=max_ratio,
        skips=round(skipped),
        assessed=round(_total(r, "training_assessed_steps_total") or 0.0),
        collapse=collapse,
    )


def rank_divergence(run: TrainingRun, cfg: HealthConfig, out: Findings) -> float:
    """Each rank's mean post-warm-up log loss / log gradient norm over its last windowSteps steps,
    against the cross-rank median of those means. With two ranks the gap is half the difference of
    the two means, exactly the sampled gate's per-step formula; the z (three ranks or more) is
    against the spread of the rank means (floored at scaleFloor)."""
    fails, warns, _ = out
    n_ranks = len(run.counts)
    if n_ranks < 2:
        return 0.0
    threshold = bonferroni_threshold(cfg.rank_divergence_z, n_ranks)
    worst = 0.0
    for label, metric in (("loss", "loss"), ("gradient norm", "grad_norm")):
        means = np.full(n_ranks, np.nan)
        for i, r in enumerate(run.counts):
            mean, n = r.divergence.get(metric, (math.nan, 0.0))
            if n >= cfg.min_history:
                means[i] = mean
        if np.count_nonzero(~np.isnan(means)) < 2:
            continue
        med = float(np.nanmedian(means))
        scale = max(MAD_TO_SD * float(np.nanmedian(np.abs(means - med))), cfg.scale_floor)
        for i, r in enumerate(run.counts):
            if math.isnan(means[i]):
                continue
            gap = float(means[i] - med)
            z = gap / scale if n_ranks >= 3 else 0.0
            rel = math.expm1(abs(gap))
            worst = max(worst, abs(z))
            flagged = abs(z) > threshold
            if (flagged or n_ranks == 2) and rel > cfg.max_rank_divergence:
                fails.append(
                    f"rank {r.rank}: {label} {rel:.0%} away from the other ranks "
                    f"(z {z:.1f}, bound {cfg.max_rank_divergence:.0%}; mean over its last {cfg.window} steps)"
                )
            elif flagged:
                warns.append(
                    f"rank {r.rank}: {label} diverges from the other ranks (z {z:.1f} > {threshold:.2f})"
                )
    return worst
