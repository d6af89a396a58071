"""The gradient-health gate on generated training runs: clean runs pass, each pathology is caught."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from lossgate.core.evidence import RankSeries, TrainingRun
from lossgate.core.health import HealthConfig, assess
from lossgate.core.health_rules import bonferroni_threshold, counter_increments, max_events_in_window
from lossgate.core.verdicts import HealthVerdict

CFG = HealthConfig()
STEPS = 3000


@dataclasses.dataclass
class Series:
    """Mutable per-rank arrays for building a run, then frozen into RankSeries."""

    loss: np.ndarray
    grad: np.ndarray
    nonfinite: np.ndarray
    scale: np.ndarray


def clean_run(seed: int, ranks: int = 8, steps: int = STEPS, fp16: bool = False) -> list[Series]:
    """A healthy data-parallel run: a shared decaying loss with per-rank micro-batch noise, local
    gradient norms with mildly heavy-tailed noise (t, 8 df, in log space), and for fp16 a dynamic loss
    scale that doubles every 1000 clean steps and halves on a rare overflow (about 1 per 2000 steps)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float64)
    trend = 1.0 + 2.0 * np.exp(-t / 800.0)
    grad_trend = 1.0 + 2.0 * np.exp(-t / 200.0)
    out = []
    for _ in range(ranks):
        loss = trend * np.exp(rng.normal(0.0, 0.03, steps))
        grad = grad_trend * np.exp(0.1 * rng.standard_t(8, steps))
        nonfinite = np.zeros(steps)
        scale = np.full(steps, np.nan)
        if fp16:
            overflow = rng.random(steps) < 1 / 2000
            level, since = 2.0**16, 0
            for i in range(steps):
                if overflow[i]:
                    level, since = level / 2, 0
                    nonfinite[i:] += 1
                else:
                    since += 1
                    if since == 1000:
                        level, since = level * 2, 0
                scale[i] = level
        out.append(Series(loss, grad, nonfinite, scale))
    return out


def to_run(
    series: list[Series], fp16: bool = False, validation: tuple[float, float] | None = (1.00, 1.00)
) -> TrainingRun:
    steps = tuple(float(i) for i in range(len(series[0].loss)))
    ranks = tuple(
        RankSeries(
            rank=str(i),
            steps=steps,
            loss=tuple(s.loss.tolist()),
            grad_norm=tuple(s.grad.tolist()),
            nonfinite_total=tuple(s.nonfinite.tolist()),
            loss_scale=tuple(s.scale.tolist()) if fp16 else (),
        )
        for i, s in enumerate(series)
    )
    canary, baseline = validation if validation is not None else (None, None)
    return TrainingRun("canary-run", ranks, canary, baseline, fp16)


@pytest.mark.parametrize("fp16", [False, True])
def test_clean_runs_never_fail(fp16: bool) -> None:
    # Given 25 healthy 8-rank runs of 3000 steps (different seeds)
    verdicts = [assess(to_run(clean_run(seed, fp16=fp16), fp16=fp16), CFG) for seed in range(25)]
    # Then none fails, and nearly all pass outright (a warning needs three spikes within 1000 steps)
    assert not [v.reasons for v in verdicts if v.verdict is HealthVerdict.FAIL]
    passed = sum(v.verdict is HealthVerdict.PASS for v in verdicts)
    assert passed >= 23, [v.reasons for v in verdicts if v.verdict is not HealthVerdict.PASS]
    # And the numbers are reported
    assert all(v.points_assessed > 2000 and v.nonfinite_steps == 0 for v in verdicts)


def test_a_single_noisy_step_is_not_a_failure() -> None:
    # Given a clean run where one rank has one step with a 3x gradient norm (robust z well above 6)
    run = clean_run(1)
    run[3].grad[2000] *= 3.0
    result = assess(to_run(run), CFG)
    # Then the spike is counted and measured, but the run passes
    assert result.grad_norm_spikes == 1
    assert result.max_grad_norm_z > CFG.grad_norm_spike_z
    assert result.verdict is HealthVerdict.PASS


def test_three_spikes_within_1000_steps_warn_and_four_fail() -> None:
    run = clean_run(2)
    for step in (1200, 1500, 1700):
        run[0].grad[step] *= 3.0
    warned = assess(to_run(run), CFG)
    assert warned.verdict is HealthVerdict.WARN
    assert any("3 gradient-norm spikes" in r for r in warned.reasons)
    for step in (1900,):
        run[0].grad[step] *= 3.0
    failed = assess(to_run(run), CFG)
    assert failed.verdict is HealthVerdict.FAIL
    assert any("4 gradient-norm spikes" in r for r in failed.reasons)


def test_a_gradient_norm_beyond_the_user_bound_fails() -> None:
    # Given one step with a gradient norm 20x its trailing median (maxGradNormSpike: 10)
    run = clean_run(3)
    run[5].grad[2500] *= 20.0
    result = assess(to_run(run), CFG)
    # Then the gate fails on the bound, naming the rank and step
    assert result.verdict is HealthVerdict.FAIL
    assert result.max_grad_norm_ratio > 10
    assert any("rank 5" in r and "step 2500" in r and "bound 10x" in r for r in result.reasons)


def test_an_applied_nan_step_fails() -> None:
    # Given a bf16 run whose non-finite counter increments at step 1800 on every rank
    run = clean_run(4)
    for s in run:
        s.nonfinite[1800:] += 1
    result = assess(to_run(run), CFG)
    assert result.verdict is HealthVerdict.FAIL
    assert result.nonfinite_steps == 1
    assert any("non-finite" in r and "step 1800" in r for r in result.reasons)
    # And with allowNonFinite it only warns
    lenient = assess(to_run(run), dataclasses.replace(CFG, allow_nonfinite=True))
    assert lenient.verdict is HealthVerdict.WARN


def test_an_infinite_loss_reading_is_non_finite_but_nan_is_missing() -> None:
    run = clean_run(5)
    run[2].loss[1000] = math.nan  # a missed scrape
    missed = assess(to_run(run), CFG)
    assert missed.verdict is not HealthVerdict.FAIL
    assert missed.nonfinite_steps == 0
    run[2].loss[1001] = math.inf
    broken = assess(to_run(run), CFG)
    assert broken.verdict is HealthVerdict.FAIL
    assert broken.nonfinite_steps == 1


def test_fp16_overflow_skips_are_not_applied_non_finite_steps() -> None:
    # Given an fp16 run with its normal rare overflows (counter and scale halving move together)
    run = clean_run(6, fp16=True)
    assert run[0].nonfinite[-1] >= 0
    result = assess(to_run(run, fp16=True), CFG)
    # Then nothing non-finite was applied and the scale is healthy
    assert result.nonfinite_steps == 0
    assert not result.loss_scale_collapse
    assert result.verdict is HealthVerdict.PASS
    # But a non-finite step without a scale drop was applied: fail
    run[1].nonfinite[2200:] += 1
    assert assess(to_run(run, fp16=True), CFG).verdict is HealthVerdict.FAIL


def test_consecutive_fp16_skips_fail() -> None:
    # Given 12 consecutive overflows from step 2000: the scale halves 12 times in a row
    run = clean_run(7, fp16=True)
    s = run[0]
    for i in range(12):
        s.scale[2000 + i :] /= 2
        s.nonfinite[2000 + i :] += 1
    result = assess(to_run(run, fp16=True), CFG)
    assert result.verdict is HealthVerdict.FAIL
    assert result.loss_scale_collapse
    assert result.nonfinite_steps == 0  # they were skipped, not applied
    assert any("consecutive skipped" in r for r in result.reasons)


def test_loss_scale_reaching_its_floor_fails_and_bf16_ignores_scale() -> None:
    run = clean_run(8, fp16=True)
    run[0].scale[2600:] = 1.0  # the scaler clamped at its minimum
    assert assess(to_run(run, fp16=True), CFG).loss_scale_collapse
    # A bf16 run reports no scale; even a scale series present is ignored when fp16 is False
    assert not assess(to_run(run, fp16=False), CFG).loss_scale_collapse


def test_an_unrecovered_loss_jump_fails_and_a_recovered_one_does_not() -> None:
    # Given a loss that jumps 50% at step 2000 on every rank (with a gradient spike) and stays there
    run = clean_run(9)
    for s in run:
        s.loss[2000:] *= 1.5
        s.grad[2000] *= 4.0
    stuck = assess(to_run(run), CFG)
    assert stuck.verdict is HealthVerdict.FAIL
    assert any("did not recover" in r for r in stuck.reasons)
    # And the same jump that decays back within 30 steps is not a failure
    run = clean_run(9)
    for s in run:
        s.loss[2000:2030] *= 1.5
        s.grad[2000] *= 4.0
    recovered = assess(to_run(run), CFG)
    assert recovered.verdict is not HealthVerdict.FAIL
    assert not any("did not recover" in r for r in recovered.reasons)


def test_a_jump_near_the_end_is_pending_not_failed() -> None:
    run = clean_run(10)
    for s in run:
        s.loss[2950:] *= 1.5
        s.grad[2950] *= 4.0
    result = assess(to_run(run), CFG)
    assert result.verdict is HealthVerdict.WARN
    assert any("not yet recovered" in r for r in result.reasons)


def test_a_diverging_rank_fails_and_a_slightly_off_rank_warns() -> None:
    # Given rank 6 whose loss runs 30% above the others from step 1000
    run = clean_run(11)
    run[6].loss[1000:] *= 1.3
    far = assess(to_run(run), CFG)
    assert far.verdict is HealthVerdict.FAIL
    assert far.rank_divergence > bonferroni_threshold(3.0, 8)
    assert any("rank 6" in r and "loss" in r for r in far.reasons)
    # And a rank 12% off is flagged (per-step cross-rank z about 3.8 > 3.58, the 3-sigma flag
    # Bonferroni-corrected over 8 ranks; loss noise is 3%) but under the 20% bound: a warning
    run = clean_run(11)
    run[6].loss[1000:] *= 1.12
    near = assess(to_run(run), CFG)
    assert near.verdict is HealthVerdict.WARN
    assert any("rank 6" in r and "diverges" in r for r in near.reasons)


def test_validation_margin() -> None:
    run = clean_run(12)
    worse = assess(to_run(run, validation=(1.05, 1.00)), CFG)
    assert worse.verdict is HealthVerdict.FAIL
    assert worse.validation_delta == pytest.approx(0.05)
    within = assess(to_run(run, validation=(1.01, 1.00)), CFG)
    assert within.verdict is HealthVerdict.PASS
    missing = assess(to_run(run, validation=None), CFG)
    assert missing.verdict is HealthVerdict.PASS
    assert missing.validation_delta is None
    assert assess(to_run(run, validation=(math.nan, 1.0)), CFG).verdict is HealthVerdict.FAIL


@pytest.mark.parametrize(
    ("case", "run"),
    [
        ("no ranks", TrainingRun("r", ())),
        ("only warm-up", to_run(clean_run(13, steps=400))),
        (
            "all missing",
            to_run(
                [Series(np.full(STEPS, np.nan), np.full(STEPS, np.nan), np.zeros(STEPS), np.zeros(STEPS))]
            ),
        ),
        ("empty series", TrainingRun("r", (RankSeries("0", (), (), ()),))),
    ],
)
def test_missing_data_is_unknown_not_pass(case: str, run: TrainingRun) -> None:
    result = assess(run, CFG)
    assert result.verdict is HealthVerdict.UNKNOWN, (case, result.reasons)
    assert result.reasons


def test_malformed_series_lengths_do_not_crash() -> None:
    ragged = RankSeries("0", tuple(float(i) for i in range(1000)), (1.0,) * 500, (1.0,) * 1500, (0.0,) * 3)
    result = assess(TrainingRun("r", (ragged,)), CFG)
    assert result.verdict in set(HealthVerdict)


def test_counter_resets_are_increments() -> None:
    # A counter 0, 2, 2, 1 (reset, then one more), 3 has increased by 2 + 1 + 2 = 5
    assert counter_increments(np.array([0.0, 2.0, 2.0, 1.0, 3.0]), count_initial=True).sum() == 5
    assert max_events_in_window(np.array([0, 10, 999, 1000, 1500]), 1000) == 3


def test_to_dict_is_json_ready() -> None:
    d = assess(to_run(clean_run(14)), CFG).to_dict()
    assert d["verdict"] == "Pass"
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(
    "kwargs", [{"window": 1}, {"min_history": 500}, {"grad_norm_spike_z": 0}, {"max_grad_norm_spike": -1}]
)
def test_invalid_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        HealthConfig(**kwargs)  # type: ignore[arg-type]
