"""Gradient-health gate of the canary's training run (docs/judge.md, "The gradient-health gate").

`assess(run, config)` is pure: pass / warn / fail / unknown, with the reasons and the numbers behind
them. It is a gate outside the judge's alpha: a failure blocks the rollout before traffic moves (and
rolls back if it appears mid-rollout); a warning lets the caller tighten alpha_rollback or lengthen
steps. Missing or too little data is UNKNOWN, never PASS.

Series are per rank and aligned by training step; NaN means missing, +-inf means a non-finite value.
When the exporter counts every step (TrainingRun.counts, lossgate.instrument.step_stats) the rules
read exact counts (core.health_counts) and windows and rates are in steps. From the gauges of an old
exporter they count observed points ("per 1000 steps" reads "per 1000 observed points"), and the
result carries an EXPORTER_OUTDATED note.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lossgate.core.evidence import RankSeries, TrainingRun
from lossgate.core.health_counts import MISSING as COUNT_MISSING
from lossgate.core.health_counts import assess_rank as assess_counted_rank
from lossgate.core.health_counts import rank_divergence as counted_divergence
from lossgate.core.health_rules import (
    FloatArray,
    bonferroni_threshold,
    check_recovery,
    counter_increments,
    cross_rank_divergence,
    event_starts,
    longest_skip_run,
    max_events_in_window,
    robust_z,
    safe_log,
    scale_halvings,
    trailing_robust,
)
from lossgate.core.verdicts import HealthVerdict

# The prefix of the note on a verdict from an old, gauge-only exporter (the TrainingHealthy condition's
# reason becomes ExporterOutdated while this note is there).
EXPORTER_OUTDATED = "ExporterOutdated"
OUTDATED_NOTE = (
    f"{EXPORTER_OUTDATED}: run exports only the training gauges (sampled, not every step); upgrade "
    "lossgate.instrument so it exports training_steps_total and the counted series (docs/metrics.md)"
)


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the gate (defaults in docs/judge.md).

    `max_grad_norm_spike` is the user's hard bound (the CR's `maxGradNormSpike`): a ratio of the
    gradient norm to its trailing median (10 means "ten times the recent typical norm"); one applied
    step beyond it fails the gate. `grad_norm_spike_z` is the statistical spike threshold (robust z of
    log norm) used for spike counting. `max_rank_divergence` (the CR's `maxRankDivergence`) is the
    relative gap (0.2 = 20%) between a rank's mean loss or gradient norm and the other ranks' median
    beyond which a statistically flagged rank fails the gate instead of warning.
    """

    warmup_steps: float = 500.0  # training steps excluded from spike, scale and divergence rules
    window: int = 300  # trailing points for median / MAD (200-500 work)
    min_history: int = 60  # points of history before a point is judged at all
    grad_norm_spike_z: float = 6.0
    loss_spike_z: float = 7.0  # 6-8 work
    spikes_per_1000: float = 3.0  # fail on more spike events than this in any 1000 points
    warn_spikes_per_1000: float = 3.0  # warn at this many (m-of-n hysteresis: 3-of-1000 warns, 4 fails)
    recovery_steps: int = 200  # a spike is unrecovered if the loss stays up this long ...
    recovery_fraction: float = 0.9  # ... at this fraction of the points (brief dips do not recover)
    recovery_mads: float = 3.0  # "up": above the pre-spike median + this many robust sd
    scale_floor: float = 0.01  # smallest robust sd of a log series (a flat series is not infinitely tight)
    max_consecutive_skips: int = 10  # fp16: this many skipped steps in a row fails
    min_loss_scale: float = 1.0  # fp16: the scale reaching this floor fails
    loss_scale_drop: float = 256.0  # fp16: falling this factor (2^8) below its running median fails
    rank_divergence_z: float = 3.0  # flag a rank above this z, Bonferroni-corrected over ranks
    max_rank_divergence: float = 0.2
    validation_margin: float = 0.02  # canary's validation loss may exceed the baseline's by this fraction
    allow_nonfinite: bool = False  # True: non-finite applied steps warn instead of failing
    max_grad_norm_spike: float = 10.0

    def __post_init__(self) -> None:
        if self.window < 2 or self.min_history < 2 or self.min_history > self.window:
            raise ValueError("need 2 <= min_history <= window")
        if self.recovery_steps < 1 or not 0 < self.recovery_fraction <= 1:
            raise ValueError("recovery_steps must be >= 1 and recovery_fraction in (0, 1]")
        for name in (
            "grad_norm_spike_z",
            "loss_spike_z",
            "spikes_per_1000",
            "warn_spikes_per_1000",
            "scale_floor",
            "loss_scale_drop",
            "rank_divergence_z",
            "max_rank_divergence",
            "validation_margin",
            "max_grad_norm_spike",
            "recovery_mads",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if self.max_consecutive_skips < 1 or not math.isfinite(self.warmup_steps):
            raise ValueError("max_consecutive_skips must be >= 1 and warmup_steps finite")


@dataclass(frozen=True)
class HealthResult:
    verdict: HealthVerdict
    reasons: tuple[str, ...]
    nonfinite_steps: int  # applied non-finite steps (the most seen by any rank)
    grad_norm_spikes: int  # gradient-norm spike events after warm-up (the most on any rank)
    max_grad_norm_z: float  # largest robust z of log gradient norm after warm-up (0 if none)
    rank_divergence: float  # largest cross-rank robust z (window mean) over ranks and metrics
    loss_scale_collapse: bool
    validation_delta: float | None  # canary minus baseline validation loss (nats); None if unknown
    loss_spikes: int = 0
    max_grad_norm_ratio: float = 0.0  # largest gradient norm / trailing median after warm-up
    skipped_steps: int = 0  # fp16 overflow skips implied by loss-scale drops (the most on any rank)
    points_assessed: int = 0  # post-warm-up points with enough history (the most on any rank)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        d["reasons"] = list(self.reasons)
        return d


@dataclass
class _Findings:
    fails: list[str]
    warns: list[str]
    notes: list[str]


def _aligned(series: RankSeries) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """The rank's arrays, all of the length of `steps` (pad with NaN), sorted by step."""
    steps = np.asarray(series.steps, dtype=np.float64)
    n = len(steps)

    def fit(values: tuple[float, ...]) -> FloatArray:
        arr = np.asarray(values, dtype=np.float64)[:n]
        return np.concatenate([arr, np.full(n - len(arr), np.nan)])

    order = np.argsort(steps, kind="stable")
    arrays = (
        steps,
        fit(series.loss),
        fit(series.grad_norm),
        fit(series.nonfinite_total),
        fit(series.loss_scale),
    )
    s, loss, grad, nf, ls = (a[order] for a in arrays)
    return s, loss, grad, nf, ls


@dataclass(frozen=True)
class _RankStats:
    nonfinite: int
    grad_spikes: int
    loss_spikes: int
    max_z: float
    max_ratio: float
    skips: int
    assessed: int
    collapse: bool


MAX_STEPS_PER_READING = 1e12


def _assess_rank(series: RankSeries, fp16: bool, cfg: HealthConfig, out: _Findings) -> _RankStats:
    name = f"rank {series.rank}"
    steps, loss, grad, nf_total, scale = _aligned(series)
    has_scale = fp16 and bool(np.any(np.isfinite(scale)))

    # Non-finite applied steps: counter increments or +-inf readings, minus fp16 overflow skips.
    halvings = scale_halvings(scale) if has_scale else np.zeros(len(steps))
    observed_inf = (np.isinf(loss) | np.isinf(grad)).astype(np.float64)
    nonfinite = np.maximum(counter_increments(nf_total, count_initial=not fp16), observed_inf)
    applied = np.maximum(nonfinite - halvings, 0.0) if fp16 else nonfinite
    # A counter that jumps by more steps than any job runs is garbage (a reset mis-read, a wrong
    # series); capping each increment keeps the sum finite, and it still fails the gate.
    applied = np.minimum(applied, MAX_STEPS_PER_READING)
    applied_count = round(float(applied.sum()))
    if applied_count > 0:
        first = float(steps[np.flatnonzero(applied > 0)[0]])
        msg = (
            f"{name}: {applied_count} applied step(s) with non-finite loss or gradients "
            f"(first at step {first:.0f})"
        )
        (out.warns if cfg.allow_nonfinite else out.fails).append(msg)

    post = steps >= cfg.warmup_steps
    log_grad, log_loss = safe_log(grad[post]), safe_log(loss[post])
    post_steps = steps[post]
    grad_tr = trailing_robust(log_grad, cfg.window, cfg.min_history, cfg.scale_floor)
    loss_tr = trailing_robust(log_loss, cfg.window, cfg.min_history, cfg.scale_floor)
    z_grad, z_loss = robust_z(log_grad, grad_tr), robust_z(log_loss, loss_tr)
    assessed = int(max(np.count_nonzero(np.isfinite(z_grad)), np.count_nonzero(np.isfinite(z_loss))))

    with np.errstate(invalid="ignore"):
        grad_events = event_starts(np.nan_to_num(z_grad, nan=0.0) > cfg.grad_norm_spike_z)
        loss_events = event_starts(np.nan_to_num(z_loss, nan=0.0) > cfg.loss_spike_z)
        ratio = np.exp(np.minimum(log_grad - grad_tr.median, 700.0))  # no overflow on absurd values
    max_z = float(np.nanmax(z_grad)) if np.any(np.isfinite(z_grad)) else 0.0
    max_ratio = float(np.nanmax(ratio)) if np.any(np.isfinite(ratio)) else 0.0

    if max_ratio > cfg.max_grad_norm_spike:
        at = float(post_steps[int(np.nanargmax(ratio))])
        out.fails.append(
            f"{name}: gradient norm {max_ratio:.1f}x its trailing median at step {at:.0f} "
            f"(bound {cfg.max_grad_norm_spike:g}x)"
        )
    for label, events in (("gradient-norm", grad_events), ("loss", loss_events)):
        most = max_events_in_window(events, 1000)
        if most > cfg.spikes_per_1000:
            out.fails.append(
                f"{name}: {most} {label} spikes within 1000 steps (more than {cfg.spikes_per_1000:g})"
            )
        elif most >= cfg.warn_spikes_per_1000:
            out.warns.append(f"{name}: {most} {label} spikes within 1000 steps")

    events = np.union1d(grad_events, loss_events).astype(np.int64)
    recovery = check_recovery(
        events, log_loss, loss_tr, cfg.recovery_steps, cfg.recovery_mads, cfg.recovery_fraction
    )
    for e in recovery.unrecovered:
        out.fails.append(
            f"{name}: loss did not recover within {cfg.recovery_steps} steps of the spike at step "
            f"{post_steps[e]:.0f}"
        )
    for e in recovery.pending:
        out.warns.append(f"{name}: loss has not yet recovered from the spike at step {post_steps[e]:.0f}")

    collapse = False
    skips = round(float(halvings[post].sum())) if has_scale else 0
    if has_scale:
        post_scale = scale[post]
        run = longest_skip_run(halvings[post])
        if run >= cfg.max_consecutive_skips:
            collapse = True
            out.fails.append(
                f"{name}: {run:.0f} consecutive skipped fp16 steps (limit {cfg.max_consecutive_skips})"
            )
        finite = post_scale[np.isfinite(post_scale) & (post_scale > 0)]
        if len(finite) and float(finite.min()) <= cfg.min_loss_scale:
            collapse = True
            out.fails.append(f"{name}: fp16 loss scale reached its floor ({float(finite.min()):g})")
        log_scale = safe_log(post_scale)
        scale_tr = trailing_robust(log_scale, cfg.window, cfg.min_history, cfg.scale_floor)
        with np.errstate(invalid="ignore"):
            drop = scale_tr.median - log_scale
        if np.any(np.nan_to_num(drop, nan=0.0) > math.log(cfg.loss_scale_drop)):
            collapse = True
            # Capped below exp's overflow: a scale near the smallest double is a drop of ~700 in log.
            worst = math.exp(min(float(np.nanmax(drop)), 700.0))
            out.fails.append(f"{name}: fp16 loss scale fell {worst:.3g}x below its running median")

    return _RankStats(
        nonfinite=applied_count,
        grad_spikes=len(grad_events),
        loss_spikes=len(loss_events),
        max_z=max_z,
        max_ratio=max_ratio,
        skips=skips,
        assessed=assessed,
        collapse=collapse,
    )


def _rank_divergence(run: TrainingRun, cfg: HealthConfig, out: _Findings) -> float:
    """Cross-rank robust z over the last `window` post-warm-up steps, per metric."""
    aligned = [_aligned(r) for r in run.ranks]
    all_steps = np.unique(np.concatenate([a[0] for a in aligned])) if aligned else np.zeros(0)
    recent = all_steps[all_steps >= cfg.warmup_steps][-cfg.window :]
    n_ranks = len(run.ranks)
    if n_ranks < 2 or len(recent) < cfg.min_history:
        return 0.0
    threshold = bonferroni_threshold(cfg.rank_divergence_z, n_ranks)
    worst = 0.0
    for label, column in (("loss", 1), ("gradient norm", 2)):
        matrix = np.full((n_ranks, len(recent)), np.nan)
        for i, arrays in enumerate(aligned):
            steps, values = arrays[0], safe_log(arrays[column])
            pos = np.searchsorted(recent, steps)
            hit = (pos < len(recent)) & (recent[np.minimum(pos, len(recent) - 1)] == steps)
            matrix[i, pos[hit]] = values[hit]
        div = cross_rank_divergence(matrix, cfg.scale_floor)
        worst = max(worst, float(np.max(np.abs(div.z))))
        for i, rank in enumerate(run.ranks):
            z, rel = float(div.z[i]), float(div.relative[i])
            flagged = abs(z) > threshold
            if (flagged or n_ranks == 2) and rel > cfg.max_rank_divergence:
                out.fails.append(
                    f"rank {rank.rank}: {label} {rel:.0%} away from the other ranks "
                    f"(z {z:.1f}, bound {cfg.max_rank_divergence:.0%})"
                )
            elif flagged:
                out.warns.append(
                    f"rank {rank.rank}: {label} diverges from the other ranks (z {z:.1f} > {threshold:.2f})"
                )
    return worst


def _validation(run: TrainingRun, cfg: HealthConfig, out: _Findings) -> float | None:
    canary, baseline = run.validation_loss, run.baseline_validation_loss
    if canary is not None and not math.isfinite(canary):
        out.fails.append(f"canary validation loss is {canary}")
        return None
    if canary is None or baseline is None or not math.isfinite(baseline):
        out.notes.append("no validation loss to compare")
        return None
    delta = canary - baseline
    allowed = cfg.validation_margin * abs(baseline)
    if delta > allowed:
        out.fails.append(
            f"validation loss {canary:.4f} vs baseline {baseline:.4f}: worse by {delta:.4f} "
            f"(margin {allowed:.4f})"
        )
    return delta


def assess(run: TrainingRun, config: HealthConfig) -> HealthResult:
    """The gate's verdict on the canary's training run: FAIL > UNKNOWN > WARN > PASS."""
    found = _Findings([], [], [])
    if run.counts:
        out = (found.fails, found.warns, found.notes)
        stats: list[_RankStats] = [
            _RankStats(**vars(assess_counted_rank(r, config, run.fp16, out))) for r in run.counts
        ]
        divergence = counted_divergence(run, config, out)
    else:
        stats = [_assess_rank(r, run.fp16, config, found) for r in run.ranks]
        divergence = _rank_divergence(run, config, found)
        if run.exporter_outdated:
            found.notes.append(OUTDATED_NOTE)
    validation_delta = _validation(run, config, found)
    assessed = max((s.assessed for s in stats), default=0)

    if found.fails:
        verdict = HealthVerdict.FAIL
    elif not (run.ranks or run.counts) or assessed == 0:
        verdict = HealthVerdict.UNKNOWN
        if not (run.ranks or run.counts):
            found.notes.insert(0, "no training metrics")
        else:
            found.notes.insert(
                0,
                f"too few points after warm-up (step {config.warmup_steps:g}) to judge: "
                f"need {config.min_history} of history",
            )
    elif any(COUNT_MISSING in n for n in found.notes):
        verdict = HealthVerdict.UNKNOWN  # a rule of the CR cannot be judged from what is exported
    elif found.warns:
        verdict = HealthVerdict.WARN
    else:
        verdict = HealthVerdict.PASS

    reasons = tuple(found.fails + found.warns + found.notes)
    return HealthResult(
        verdict=verdict,
        reasons=reasons,
        nonfinite_steps=max((s.nonfinite for s in stats), default=0),
        grad_norm_spikes=max((s.grad_spikes for s in stats), default=0),
        max_grad_norm_z=max((s.max_z for s in stats), default=0.0),
        rank_divergence=divergence,
        loss_scale_collapse=any(s.collapse for s in stats),
        validation_delta=validation_delta,
        loss_spikes=max((s.loss_spikes for s in stats), default=0),
        max_grad_norm_ratio=max((s.max_ratio for s in stats), default=0.0),
        skipped_steps=max((s.skips for s in stats), default=0),
        points_assessed=assessed,
    )
