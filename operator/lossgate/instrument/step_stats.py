"""Per-step statistics of the gradient-health gate, computed inside the training job on every step.

The operator's gate (lossgate.core.health) judges trailing robust z-scores, spike events, recovery and
loss-scale collapse. Sampled from gauges it sees one step in 20-200; computed here on every step and
exported as counters and histograms (lossgate.instrument.training), the operator reads exact counts
over any window by differencing them, as it does for the loss counters.

The arithmetic mirrors core.health_rules exactly (a property test compares them): the trailing
median and 1.4826 MAD of the `window` post-warm-up steps before a step, refreshed every window // 30
steps and held in between, floored at `scale_floor`, NaN with fewer than `min_history` finite points.
Pure Python + numpy: no torch here, and nothing of the operator.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

MAD_TO_SD = 1.4826
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


class TrailingRobust:
    """The trailing median / robust scale of one log series, as core.health_rules.trailing_robust.

    The history is a ring buffer (a median does not care about order) and a refresh is two partitions,
    so a step costs about a microsecond: this runs inside the training loop."""

    def __init__(self, window: int, min_history: int, scale_floor: float) -> None:
        self.window, self.min_history, self.scale_floor = window, min_history, scale_floor
        self.stride = max(1, window // 30)
        self._ring = np.empty(window, dtype=np.float64)
        self._size = 0  # values held (at most window)
        self._nans = 0  # NaN values held
        self.index = 0
        self.median = math.nan
        self.scale = math.nan

    def push(self, value: float) -> tuple[float, float]:
        """The (median, scale) that judge `value`, then `value` joins the history."""
        if self.index % self.stride == 0:
            self._refresh()
        slot = self.index % self.window
        if self._size == self.window:
            self._nans -= math.isnan(self._ring[slot])
        else:
            self._size += 1
        self._ring[slot] = value
        self._nans += math.isnan(value)
        self.index += 1
        return self.median, self.scale

    def _refresh(self) -> None:
        if self._size - self._nans < self.min_history:
            self.median = self.scale = math.nan
            return
        arr = self._ring[: self._size]
        if self._nans:
            arr = arr[~np.isnan(arr)]
        med = _median(arr.copy())
        self.median = med
        self.scale = max(MAD_TO_SD * _median(np.abs(arr - med)), self.scale_floor)


def _median(work: np.ndarray) -> float:
    """np.median's value (the mean of the two middle values for an even count), by partitioning `work`
    in place: several times cheaper than np.median on a few hundred values."""
    n = len(work)
    half = n // 2
    if n % 2:
        work.partition(half)
        return float(work[half])
    work.partition((half - 1, half))
    return float((work[half - 1] + work[half]) / 2.0)


def safe_log(x: float) -> float:
    return math.log(x) if math.isfinite(x) and x > 0 else math.nan


class WindowMean:
    """Mean of the finite values among the last `window` post-warm-up steps (O(1) per step)."""

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def push(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            if not math.isnan(old):
                self.total -= old
                self.count -= 1
        self.values.append(value)
        if not math.isnan(value):
            self.total += value
            self.count += 1
        if self.count == 0:
            self.total = 0.0  # no drift once the window holds nothing finite

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


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
    """Feed every optimizer step of one rank; `counts` holds what the exporter exports."""

    def __init__(self, settings: GateSettings | None = None) -> None:
        s = self.settings = settings or GateSettings()
        self.grad = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.loss = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.scale = TrailingRobust(s.window, s.min_history, s.scale_floor)
        self.means = {"loss": WindowMean(s.window), "grad_norm": WindowMean(s.window)}
        self.z_bounds, self.ratio_bounds = s.z_buckets, s.ratio_buckets
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
            out.window_mean = {k: (m.mean, m.count) for k, m in self.means.items()}
        return out

    def update(
        self, step: float, loss: float, grad_norm: float, loss_scale: float | None, bad: bool, skipped: bool
    ) -> None:
        c, s = self._counts, self.settings
        c.steps += 1
        c.nonfinite += int(bad or skipped)
        c.skipped += int(skipped)
        self._scale(step, loss_scale, skipped)
        if step < s.warmup_steps:
            return
        index = self._post
        self._post += 1
        lg, ll = safe_log(grad_norm), safe_log(loss)
        med_g, sc_g = self.grad.push(lg)
        med_l, sc_l = self.loss.push(ll)
        z_g, z_l = (lg - med_g) / sc_g, (ll - med_l) / sc_l  # NaN propagates: not judged
        ratio = math.exp(min(lg - med_g, 700.0)) if not math.isnan(z_g) else math.nan
        self.last = (z_g, z_l, ratio)
        if not (math.isnan(z_g) and math.isnan(z_l)):
            c.assessed += 1
        if not math.isnan(z_g):
            _observe(c.grad_z, self.z_bounds, z_g)
            c.grad_z_sum += z_g
            _observe(c.ratio, self.ratio_bounds, ratio)
            c.ratio_sum += ratio
        if not math.isnan(z_l):
            _observe(c.loss_z, self.z_bounds, z_l)
            c.loss_z_sum += z_l
        started = {k: self._event(k, z_g if k[0] == "grad_norm" else z_l, index) for k in self._spikes}
        self._recovery(ll, med_l, sc_l, started)
        self.means["loss"].push(ll)
        self.means["grad_norm"].push(lg)
        if not math.isnan(ll):
            c.log_loss_sum += ll
            c.log_loss_sq += ll * ll
            c.log_loss_n += 1
        if not math.isnan(lg):
            c.log_grad_sum += lg
            c.log_grad_sq += lg * lg
            c.log_grad_n += 1

    def _event(self, key: tuple[str, float], z: float, index: int) -> bool:
        sp = self._spikes[key]
        above = not math.isnan(z) and z > key[1]
        start = above and not sp.above
        sp.above = above
        if start:
            sp.recent.append(index)
            while sp.recent[0] <= index - SPIKE_SPAN:
                sp.recent.popleft()
            _observe(self._counts.bursts[key], BURST_BUCKETS, float(len(sp.recent)))
        return start

    def _recovery(self, ll: float, med: float, scale: float, started: dict[tuple[str, float], bool]) -> None:
        s, c = self.settings, self._counts
        if not self._tracking and not any(started.values()):
            return  # nothing to follow (the common case)
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

    def _scale(self, step: float, loss_scale: float | None, skipped: bool) -> None:
        c, s = self._counts, self.settings
        post = step >= s.warmup_steps
        self._skip_run = self._skip_run + 1 if skipped else 0
        if post and self._skip_run in c.skip_runs:
            c.skip_runs[self._skip_run] += 1
        if loss_scale is None or not (math.isfinite(loss_scale) and loss_scale > 0):
            return
        if math.isfinite(self._last_scale) and loss_scale < self._last_scale:
            c.scale_decreases += 1
        self._last_scale = loss_scale
        if not post:
            return
        c.scale_floor_steps += int(loss_scale <= s.min_loss_scale)
        log_scale = math.log(loss_scale)
        med, _ = self.scale.push(log_scale)
        drop = med - log_scale
        for factor in c.scale_collapse:
            if drop > math.log(factor):
                c.scale_collapse[factor] += 1
