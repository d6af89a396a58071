"""The exporter's per-step statistics (lossgate.instrument.step_stats) against the gate's vectorised
reference (lossgate.core.health_rules): same trailing median/MAD, z, ratio, spike events, bursts per
1000 steps and recovery, step by step, on random series with NaN gaps and spikes."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.health_rules import (
    check_recovery,
    event_starts,
    max_events_in_window,
    robust_z,
    safe_log,
    trailing_robust,
)
from lossgate.instrument.robust_window import TrailingRobust
from lossgate.instrument.step_stats import GateSettings, StepCounts, StepStats

SETTINGS = GateSettings(window=24, min_history=6, warmup_steps=5.0, recovery_steps=12, recovery_fraction=0.75)


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 260))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    grad = np.exp(rng.normal(0, draw(st.sampled_from([0.05, 0.3])), n))
    loss = np.exp(rng.normal(0, 0.1, n)) * np.linspace(2.0, 1.0, n)
    for arr in (grad, loss):
        spikes = rng.random(n) < draw(st.sampled_from([0.0, 0.02, 0.1]))
        arr[spikes] *= rng.choice([5.0, 1e3], spikes.sum())
        arr[rng.random(n) < draw(st.sampled_from([0.0, 0.05]))] = np.nan
        arr[rng.random(n) < 0.01] = np.inf
    return grad, loss


def _feed(grad: np.ndarray, loss: np.ndarray) -> tuple[StepStats, np.ndarray]:
    stats = StepStats(SETTINGS)
    rows = []
    for i, (g, lo) in enumerate(zip(grad.tolist(), loss.tolist(), strict=True)):
        stats.update(float(i), lo, g, None, bad=not (math.isfinite(g) and math.isfinite(lo)), skipped=False)
        if i >= SETTINGS.warmup_steps:
            rows.append(stats.last)
    return stats, np.array(rows, dtype=np.float64).reshape(-1, 3)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(
        np.array_equal(np.isnan(a), np.isnan(b))
        and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12, atol=1e-12)
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(series())
def test_streaming_z_and_ratio_equal_the_gate_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    # Given a rank's gradient norms and losses, step by step
    grad, loss = data
    # When the exporter's statistics are fed every step
    stats, rows = _feed(grad, loss)
    # Then z of log norm, z of log loss and the ratio equal the gate's vectorised computation on the
    # post-warm-up series (same windows, stride, floors), to rounding
    post = np.arange(len(grad)) >= SETTINGS.warmup_steps
    lg, ll = safe_log(grad[post]), safe_log(loss[post])
    tg = trailing_robust(lg, SETTINGS.window, SETTINGS.min_history, SETTINGS.scale_floor)
    tl = trailing_robust(ll, SETTINGS.window, SETTINGS.min_history, SETTINGS.scale_floor)
    zg, zl = robust_z(lg, tg), robust_z(ll, tl)
    with np.errstate(invalid="ignore"):
        ratio = np.where(np.isnan(zg), np.nan, np.exp(np.minimum(lg - tg.median, 700.0)))
    assert _close(rows[:, 0], zg)
    assert _close(rows[:, 1], zl)
    assert _close(rows[:, 2], ratio)
    c = stats.counts
    # And the histograms count exactly the steps above each bound (exceedance = count - bucket)
    for i, bound in enumerate(stats.z_bounds):
        assert c.grad_z[-1] - c.grad_z[i] == int(np.count_nonzero(np.nan_to_num(zg, nan=-np.inf) > bound))
    for i, bound in enumerate(stats.ratio_bounds):
        assert c.ratio[-1] - c.ratio[i] == int(np.count_nonzero(np.nan_to_num(ratio, nan=-np.inf) > bound))
    assert c.assessed == int(np.count_nonzero(~(np.isnan(zg) & np.isnan(zl))))

    # And spike events and the most events in any 1000 steps read exactly from the burst histogram
    events = {}
    for metric, z, thr in (("grad_norm", zg, 6.0), ("loss", zl, 7.0)):
        ev = event_starts(np.nan_to_num(z, nan=0.0) > thr)
        events[metric] = ev
        buckets = c.bursts[(metric, thr)]
        assert buckets[-1] == len(ev)
        most = max_events_in_window(ev, 1000)
        for k in range(1, 21):
            assert (buckets[-1] - buckets[k - 1] > 0) == (most > k)

    # And the unrecovered / still-recovering spikes equal the gate's check_recovery
    union = np.union1d(events["grad_norm"], events["loss"]).astype(np.int64)
    rec = check_recovery(
        union, ll, tl, SETTINGS.recovery_steps, SETTINGS.recovery_mads, SETTINGS.recovery_fraction
    )
    assert c.unrecovered[(6.0, 7.0)] == len(rec.unrecovered)
    assert c.pending[(6.0, 7.0)] == len(rec.pending)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.one_of(st.floats(-50, 50), st.just(math.nan)), max_size=200),
    st.integers(1, 40),
    st.lists(st.integers(1, 50), min_size=1),
)
def test_window_mean_is_the_mean_of_the_last_window_finite_values(
    values: list[float], window: int, sizes: list[int]
) -> None:
    # Given any sequence with gaps, pushed in batches of any sizes
    robust = TrailingRobust(window, 1, 0.01)
    pushed = 0
    for size in itertools.cycle(sizes):
        if pushed >= len(values):
            break
        robust.push_many(np.array(values[pushed : pushed + size], dtype=np.float64))
        pushed = min(len(values), pushed + size)
        # Then the window mean is that of the finite values among the last `window` pushed
        tail = [x for x in values[max(0, pushed - window) : pushed] if not math.isnan(x)]
        mean, count = robust.window_mean()
        assert count == len(tail)
        if tail:
            assert math.isclose(mean, math.fsum(tail) / len(tail), rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert math.isnan(mean)


@st.composite
def steps(draw: st.DrawFn) -> np.ndarray:
    """Rows of update_batch: spikes, gaps, Inf, runs of skipped steps and a halving loss scale."""
    grad, loss = draw(series())
    n = len(grad)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    skipped = rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    amp = draw(st.booleans())
    scale = np.where(amp, 2.0 ** (16 - np.cumsum(skipped)), np.nan)
    bad = ~(np.isfinite(grad) & np.isfinite(loss))
    return np.column_stack([np.arange(n, dtype=np.float64), loss, grad, scale, bad, skipped])


def _comparable(c: StepCounts) -> dict[str, object]:
    out = dict(vars(c))
    for name in ("grad_z_sum", "loss_z_sum", "ratio_sum", "log_loss_sum", "log_loss_sq", "log_grad_sum",
                 "log_grad_sq"):  # fmt: skip
        out[name] = round(out[name], 6)
    out["window_mean"] = {k: (round(m, 9), n) for k, (m, n) in c.window_mean.items()}
    return out


@settings(max_examples=120, deadline=None, derandomize=True)
@given(steps(), st.lists(st.integers(1, 90), min_size=1, max_size=6))
def test_any_split_into_batches_gives_the_counts_of_one_step_at_a_time(
    rows: np.ndarray, sizes: list[int]
) -> None:
    # Given a rank's steps (fp32 or fp16 with skips), fed one at a time
    settings_ = GateSettings(
        window=24, min_history=6, warmup_steps=5.0, recovery_steps=12, max_consecutive_skips=(2, 3),
        loss_scale_drop=(4.0,), min_loss_scale=2.0**12,
    )  # fmt: skip
    one = StepStats(settings_)
    for row in rows:
        one.update(row[0], row[1], row[2], None if math.isnan(row[3]) else row[3], bool(row[4]), bool(row[5]))
    # When the same steps are fed in batches of any sizes (as the exporter folds them)
    batched = StepStats(settings_)
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(rows):
            break
        batched.update_batch(rows[start : start + size])
        start += size
    # Then every count, histogram, burst, recovery and running mean is the same
    assert _comparable(batched.counts) == _comparable(one.counts)
    assert np.array_equal(np.array(batched.last), np.array(one.last), equal_nan=True)


def test_skips_scale_and_nonfinite_counts() -> None:
    # Given an fp16 run: 20 warm-up steps, then 12 skipped steps in a row halving the scale each time
    stats = StepStats(GateSettings(window=40, min_history=2, warmup_steps=20.0, max_consecutive_skips=(5,)))
    scale = 2.0**16
    for step in range(60):
        skipped = 30 <= step < 42
        scale = scale / 2 if skipped else scale
        stats.update(float(step), 1.0, 1.0, scale, bad=False, skipped=skipped)
    c = stats.counts
    # Then every skip is counted, once as non-finite and once as skipped (so none is "applied")
    assert (c.steps, c.skipped, c.nonfinite, c.scale_decreases) == (60, 12, 12, 12)
    # And the run of 12 reached both limits once (10 is always counted, 5 was asked for)
    assert c.skip_runs == {5: 1, 10: 1}
    # And the scale fell more than 256x (2^8) below the median of its post-warm-up history on the 9
    # steps 38..46: from the 9th skip (2^7, median still 2^16) until the falling median reaches
    # 2^12.5 at step 46 (history 10 x 2^16, 2^15 .. 2^5, 5 x 2^4); at step 47 it is 2^12: exactly 256x
    assert c.scale_collapse[256.0] == 9
    assert c.scale_floor_steps == 0
