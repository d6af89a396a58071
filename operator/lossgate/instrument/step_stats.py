"""Per-step statistics of the gradient-health gate, computed inside the training job on every step.

The operator's gate (lossgate.core.health) judges trailing robust z-scores, spike events, recovery and
loss-scale collapse. Sampled from gauges it sees one step in 20-200; computed here on every step and
exported as counters and histograms (lossgate.instrument.training), the operator reads exact counts
over any window by differencing them, as it does for the loss counters.

The arithmetic mirrors core.health_rules exactly (a property test compares them); the trailing
statistics are lossgate.instrument.robust_window's. Steps arrive in batches (the exporter folds them
every few dozen steps): everything but spike events and the recovery that follows them is a few numpy
calls per batch, because inside a training loop every Python call runs with cold caches and costs
several times its price in a tight loop. Pure Python + numpy: no torch, nothing of the operator.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lossgate.instrument.robust_window import TrailingRobust, safe_log

SPIKE_SPAN = 1000  # "spikes per 1000 steps"
PENDING_MIN_POINTS = 10  # a recovery is reported pending once this many points followed the spike
Z_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 15.0, 20.0, 50.0)
RATIO_BUCKETS = (1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
# Spike events within the trailing 1000 steps, observed at each event: integers up to 20 so that
# any maxSpikesPer1000Steps up to 20 reads exactly (count above floor(limit)); coarser beyond.
BURST_BUCKETS = (*(float(i) for i in range(1, 21)), 30.0, 50.0, 100.0, 1000.0)


def _merge(defaults: tuple[float, ...], extra: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted({float(x) for x in (*defaults, *extra)}))


@dataclass(frozen=True)
class GateSettings:
    """What the exporter counts against: the gate's defaults, plus any custom thresholds of the CR.

    The tuples hold every threshold a rollout may ask for (each CR value must be among them; the
    defaults are always included). `window`, `min_history`, `warmup_steps` and `scale_floor` must
    match the CR's windowSteps / warmupSteps (the operator checks the exported values).
    """

    window: int = 300
    min_history: int = 60
    warmup_steps: float = 500.0
    scale_floor: float = 0.01
    grad_norm_spike_z: tuple[float, ...] = (6.0,)
    loss_spike_z: tuple[float, ...] = (7.0,)
    max_grad_norm_spike: tuple[float, ...] = (10.0,)
    max_consecutive_skips: tuple[int, ...] = (10,)
    loss_scale_drop: tuple[float, ...] = (256.0,)
    min_loss_scale: float = 1.0
    recovery_steps: int = 200
    recovery_fraction: float = 0.9
    recovery_mads: float = 3.0

    def __post_init__(self) -> None:
        if self.window < 2 or not 2 <= self.min_history <= self.window:
            raise ValueError(f"GateSettings: need 2 <= min_history <= window, got {self}")
        m = object.__setattr__
        m(self, "grad_norm_spike_z", _merge((6.0,), self.grad_norm_spike_z))
        m(self, "loss_spike_z", _merge((7.0,), self.loss_spike_z))
        m(self, "max_grad_norm_spike", _merge((10.0,), self.max_grad_norm_spike))
        m(self, "loss_scale_drop", _merge((256.0,), self.loss_scale_drop))
        m(self, "max_consecutive_skips", tuple(sorted({10, *(int(x) for x in self.max_consecutive_skips)})))

    @property
    def z_buckets(self) -> tuple[float, ...]:
        return _merge(Z_BUCKETS, (*self.grad_norm_spike_z, *self.loss_spike_z))

    @property
    def ratio_buckets(self) -> tuple[float, ...]:
        return _merge(RATIO_BUCKETS, self.max_grad_norm_spike)


@dataclass
class _Recovery:
    level: float  # log loss above this counts as "still up"
    left: int
    seen: int = 0
    above: int = 0


@dataclass
class _Spikes:
    """Spike events of one metric above one z threshold: a run of consecutive steps is one event."""

    above: bool = False
    recent: deque[int] = field(default_factory=deque)  # post-warm-up indices of recent events


@dataclass
class StepCounts:
    """Cumulative counts of one rank, exported as counters/histograms (all monotone)."""

    steps: int = 0
    assessed: int = 0  # post-warm-up steps whose gradient-norm or loss z was defined
    nonfinite: int = 0
    skipped: int = 0
    scale_decreases: int = 0
    scale_floor_steps: int = 0
    grad_z: list[int] = field(default_factory=list)  # per z bucket (cumulative le in .counts), then count
    loss_z: list[int] = field(default_factory=list)
    ratio: list[int] = field(default_factory=list)
    grad_z_sum: float = 0.0
    loss_z_sum: float = 0.0
    ratio_sum: float = 0.0
    bursts: dict[tuple[str, float], list[int]] = field(default_factory=dict)  # (metric, z) -> buckets
    unrecovered: dict[tuple[float, float], int] = field(default_factory=dict)  # (grad z, loss z)
    pending: dict[tuple[float, float], int] = field(default_factory=dict)  # gauge
    skip_runs: dict[int, int] = field(default_factory=dict)  # limit -> runs reaching it
    scale_collapse: dict[float, int] = field(default_factory=dict)  # drop factor -> steps
    log_loss_sum: float = 0.0
    log_loss_sq: float = 0.0
    log_loss_n: int = 0
    log_grad_sum: float = 0.0
    log_grad_sq: float = 0.0
    log_grad_n: int = 0
    window_mean: dict[str, tuple[float, int]] = field(default_factory=dict)  # gauge: metric -> (mean, n)


def _observe(buckets: list[int], bounds: tuple[float, ...], value: float) -> None:
    """Per-bucket counts (the first bound >= value; the last slot is above every bound): O(log n)."""
    buckets[bisect.bisect_left(bounds, value)] += 1


def _cumulative(buckets: list[int]) -> list[int]:
    """Prometheus' cumulative `le` counts, the last one the total."""
    return list(itertools.accumulate(buckets))


class StepStats:
    """Feed every optimizer step of one rank (update_batch, or update for one); `counts` holds what the
    exporter exports. Any split of the same steps into batches gives the same counts."""

    def __init__(self, settings: GateSettings | None = None) -> None:
        s = self.settings = settings or GateSettings()
        self.grad = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.loss = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.scale = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.z_bounds, self.ratio_bounds = s.z_buckets, s.ratio_buckets
        self._z_edges, self._ratio_edges = np.array(self.z_bounds), np.array(self.ratio_bounds)
        c = self._counts = StepCounts()
        c.grad_z = [0] * (len(self.z_bounds) + 1)
        c.loss_z = [0] * (len(self.z_bounds) + 1)
        c.ratio = [0] * (len(self.ratio_bounds) + 1)
        self._spikes = {("grad_norm", z): _Spikes() for z in s.grad_norm_spike_z} | {
            ("loss", z): _Spikes() for z in s.loss_spike_z
        }
        for key in self._spikes:
            c.bursts[key] = [0] * (len(BURST_BUCKETS) + 1)
        self._pairs = [(g, lz) for g in s.grad_norm_spike_z for lz in s.loss_spike_z]
        self._recovering: dict[tuple[float, float], list[_Recovery]] = {p: [] for p in self._pairs}
        for p in self._pairs:
            c.unrecovered[p] = 0
            c.pending[p] = 0
        c.skip_runs = dict.fromkeys(s.max_consecutive_skips, 0)
        c.scale_collapse = dict.fromkeys(s.loss_scale_drop, 0)
        self._post = 0  # post-warm-up steps seen
        self.last: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # z grad, z loss, ratio
        self._skip_run = 0
        self._last_scale = math.nan

    @property
    def counts(self) -> StepCounts:
        """A copy of the counts, histograms cumulative (what one scrape exports)."""
        c = self._counts
        out = StepCounts(**vars(c))
        for name in ("grad_z", "loss_z", "ratio"):
            setattr(out, name, _cumulative(getattr(c, name)))
        out.bursts = {k: _cumulative(v) for k, v in c.bursts.items()}
        for name in ("unrecovered", "pending", "skip_runs", "scale_collapse"):
            setattr(out, name, dict(getattr(c, name)))
        if self._post:
            out.window_mean = {"loss": self.loss.window_mean(), "grad_norm": self.grad.window_mean()}
        return out

    def update(
        self, step: float, loss: float, grad_norm: float, loss_scale: float | None, bad: bool, skipped: bool
    ) -> None:
        """One step (loss_scale None: no mixed-precision scale)."""
        scale = math.nan if loss_scale is None else loss_scale
        self.update_batch(np.array([[step, loss, grad_norm, scale, bad, skipped]], dtype=np.float64))

    def update_batch(self, rows: np.ndarray) -> None:
        """Steps in order, one row each: step, loss, grad_norm, loss_scale (NaN: none), bad, skipped
        (the last two 0/1): one numpy array, as the exporter builds it from its pending steps."""
        if len(rows) == 0:
            return
        c, s = self._counts, self.settings
        step, loss, grad, scale = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        bad, skipped = rows[:, 4] != 0, rows[:, 5] != 0
        c.steps += len(rows)
        c.nonfinite += int(np.count_nonzero(bad | skipped))
        c.skipped += int(np.count_nonzero(skipped))
        post = step >= s.warmup_steps
        self._scale(post, scale, skipped)
        if post.all():
            lg, ll = safe_log(grad), safe_log(loss)
        elif post.any():
            lg, ll = safe_log(grad[post]), safe_log(loss[post])
        else:
            return
        first = self._post
        self._post += len(lg)
        med_g, sc_g = self.grad.push_many(lg)
        med_l, sc_l = self.loss.push_many(ll)
        with np.errstate(invalid="ignore", over="ignore"):
            z_g, z_l = (lg - med_g) / sc_g, (ll - med_l) / sc_l  # NaN propagates: not judged
            ratio = np.exp(np.minimum(lg - med_g, 700.0))  # NaN exactly where z_g is NaN
        self.last = (float(z_g[-1]), float(z_l[-1]), float(ratio[-1]))
        has_g, has_l = ~np.isnan(z_g), ~np.isnan(z_l)
        c.assessed += int(np.count_nonzero(has_g | has_l))
        if has_g.any():
            zg, r = z_g[has_g], ratio[has_g]
            _observe_all(c.grad_z, self._z_edges, zg)
            _observe_all(c.ratio, self._ratio_edges, r)
            c.grad_z_sum += math.fsum(zg.tolist())
            c.ratio_sum += math.fsum(r.tolist())
        if has_l.any():
            zl = z_l[has_l]
            _observe_all(c.loss_z, self._z_edges, zl)
            c.loss_z_sum += math.fsum(zl.tolist())
        starts = {k: self._events(k, z_g if k[0] == "grad_norm" else z_l, first) for k in self._spikes}
        self._recoveries(ll, med_l, sc_l, starts)
        total, squares, n = _moments(ll)
        c.log_loss_sum += total
        c.log_loss_sq += squares
        c.log_loss_n += n
        total, squares, n = _moments(lg)
        c.log_grad_sum += total
        c.log_grad_sq += squares
        c.log_grad_n += n

    def _events(self, key: tuple[str, float], z: np.ndarray, first: int) -> np.ndarray:
        """Batch offsets where a spike event starts (z crosses above the threshold); counts bursts."""
        sp = self._spikes[key]
        above = z > key[1]  # NaN: not above
        starts = np.flatnonzero(above & ~np.concatenate(([sp.above], above[:-1])))
        sp.above = bool(above[-1])
        for offset in starts.tolist():  # events are rare: Python per event is fine
            index = first + offset
            sp.recent.append(index)
            while sp.recent[0] <= index - SPIKE_SPAN:
                sp.recent.popleft()
            _observe(self._counts.bursts[key], BURST_BUCKETS, float(len(sp.recent)))
        return starts

    def _recoveries(
        self, ll: np.ndarray, med: np.ndarray, sc: np.ndarray, starts: dict[tuple[str, float], np.ndarray]
    ) -> None:
        """Follow each spike's next recovery_steps points, step by step, only while one is followed."""
        began = {k: set(v.tolist()) for k, v in starts.items()}
        todo = sorted(set().union(*began.values()))
        i = 0 if self._tracking else (todo[0] if todo else len(ll))
        while i < len(ll):
            started = {k: i in v for k, v in began.items()}
            self._recovery(float(ll[i]), float(med[i]), float(sc[i]), started)
            i += 1
            if not self._tracking:  # jump to the next spike, if any
                i = next((t for t in todo if t >= i), len(ll))

    def _recovery(self, ll: float, med: float, scale: float, started: dict[tuple[str, float], bool]) -> None:
        s, c = self.settings, self._counts
        level = med + s.recovery_mads * scale
        for pair, trackers in self._recovering.items():
            # the trackers of earlier spikes see this point first (a spike's own point is not "after")
            alive: list[_Recovery] = []
            for t in trackers:
                t.left -= 1
                if not math.isnan(ll):
                    t.seen += 1
                    t.above += int(ll > t.level)
                if t.left > 0:
                    alive.append(t)
                elif t.seen and t.above >= s.recovery_fraction * t.seen:
                    c.unrecovered[pair] += 1
            if (started[("grad_norm", pair[0])] or started[("loss", pair[1])]) and math.isfinite(level):
                alive.append(_Recovery(level, s.recovery_steps))
            self._recovering[pair] = alive
            c.pending[pair] = sum(
                1 for t in alive if t.seen >= PENDING_MIN_POINTS and t.above >= s.recovery_fraction * t.seen
            )

    @property
    def _tracking(self) -> bool:
        return any(self._recovering.values())

    def _scale(self, post: np.ndarray, scale: np.ndarray, skipped: np.ndarray) -> None:
        """Skip runs and the loss scale (mixed precision). Nothing to do in an fp32 run."""
        c, s = self._counts, self.settings
        if not skipped.any() and np.isnan(scale).all() and 0 not in c.skip_runs:
            self._skip_run = 0
            return
        # the run of consecutive skipped steps ending at each step, carried over from the last batch
        pos = np.arange(len(skipped))
        reset = np.maximum.accumulate(np.where(skipped, -1, pos))
        run = np.where(skipped, pos - reset + np.where(reset < 0, self._skip_run, 0), 0)
        for limit in c.skip_runs:
            c.skip_runs[limit] += int(np.count_nonzero(post & (run == limit)))
        self._skip_run = int(run[-1])
        valid = np.isfinite(scale) & (scale > 0)
        given = scale[valid]
        if len(given) == 0:
            return
        previous = np.concatenate(([self._last_scale], given[:-1]))
        c.scale_decreases += int(np.count_nonzero(np.isfinite(previous) & (given < previous)))
        self._last_scale = float(given[-1])
        judged = scale[valid & post]
        if len(judged) == 0:
            return
        c.scale_floor_steps += int(np.count_nonzero(judged <= s.min_loss_scale))
        log_scale = np.array([math.log(x) for x in judged.tolist()])
        med, _ = self.scale.push_many(log_scale)
        drop = med - log_scale
        for factor in c.scale_collapse:
            c.scale_collapse[factor] += int(np.count_nonzero(drop > math.log(factor)))


def _moments(log: np.ndarray) -> tuple[float, float, int]:
    """Sum, sum of squares and count of the finite values."""
    fin = log[~np.isnan(log)]
    return math.fsum(fin.tolist()), math.fsum((fin * fin).tolist()), len(fin)


def _observe_all(buckets: list[int], edges: np.ndarray, values: np.ndarray) -> None:
    """_observe for each value: per-bucket counts (the first bound >= value; last slot: above all)."""
    slots = np.searchsorted(edges, values, side="left")
    for slot, n in enumerate(np.bincount(slots, minlength=len(buckets))):
        if n:
            buckets[slot] += int(n)
