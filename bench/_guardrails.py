"""Guardrail and per-class scenarios of the detection benchmark (docs/judge.md, "Guardrails").

The rollout plan is the benchmark's (30 s intervals, steps 5/10/25/50% of 20 looks); requests and
labelled predictions per interval are Poisson, split by the weight. Every check runs through the
code the operator runs: `judge_path` (the pooled judge and each class's), `diff_path` (guardrails),
each at its Bonferroni share of alpha_rollback. Scenarios:

- class: one class of 5 30% worse on the canary, the other four better so the pooled mean is equal;
- errors: error rate 0.5% -> 1.5% (+1 point), margin 0.2 points;
- p95x2: every latency doubled; the guardrail judges the fraction slower than the baseline's p95
  (a bucket bound), relative margin 50% (at most 7.5% slower);
- null: nothing regresses, with 6 checks (pooled loss, errors, fraction slower, 3 class slots).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from _sim import DEFAULT_PLAN, LossPmf, Plan, _draw_arm, classifier_pmf
from lossgate.core.bounded_diff import DiffNull, diff_path
from lossgate.core.family import split_alpha
from lossgate.core.judge import JudgeConfig, judge_path, used_intervals
from lossgate.core.stratified import ArmArrays

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

ALPHA = 0.01
REQUESTS_PER_INTERVAL = 6000.0  # 200 requests a second over both arms
LABELLED_PER_INTERVAL = 3000.0  # half of them labelled
CLASS_SHARES_5 = (0.40, 0.25, 0.15, 0.12, 0.08)
CLASS_SHARES_3 = (0.5, 0.3, 0.2)
WORSE_CLASS = 3  # the 12% class
ERROR_BASE, ERROR_MARGIN = 0.005, 0.002
SLOW_BASE, SLOW_RELATIVE = 0.05, 0.5
LATENCY_SIGMA = 0.6  # lognormal latencies: doubling them moves the fraction above the old p95 to 31%
POOLED_MARGIN, CLASS_MARGIN, CLASS_MIN_SAMPLES = 0.02, 0.05, 500.0


@dataclass(frozen=True)
class Result:
    rate: float  # share of rollouts rolled back by the end of the ramp
    ci: tuple[float, float]  # Clopper-Pearson 95%
    mean_look: float | None  # mean 1-based look of the rollback, over the rollouts rolled back
    mean_canary_requests: float | None  # canary requests (or labelled samples for losses) by then
    by_check: dict[str, float]  # share of rollouts each check rolled back (a rollout may count twice)

    def as_dict(self) -> dict[str, object]:
        return self.__dict__


def _ci(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def _first(flags: BoolArray) -> NDArray[np.int64]:
    return np.where(flags.any(axis=-1), np.argmax(flags, axis=-1), -1)


def _loss_arms(
    rng: np.random.Generator, plan: Plan, reps: int, pmfs_b: list[LossPmf], pmfs_c: list[LossPmf],
    shares: tuple[float, ...],
) -> list[tuple[tuple[FloatArray, ...], tuple[FloatArray, ...]]]:  # fmt: skip
    """Per class: (baseline (n, sum, sumsq, tail), canary (...)) per interval, shape (reps, looks)."""
    w = plan.weights / 100.0
    out = []
    for pb, pc, share in zip(pmfs_b, pmfs_c, shares, strict=True):
        mb = np.broadcast_to(LABELLED_PER_INTERVAL * share * (1 - w), (reps, plan.looks))
        mc = np.broadcast_to(LABELLED_PER_INTERVAL * share * w, (reps, plan.looks))
        ones = np.ones(plan.looks)
        out.append((_draw_arm(rng, mb, [(pb, ones)]), _draw_arm(rng, mc, [(pc, ones)])))
    return out


def _judge(
    b: tuple[FloatArray, ...], c: tuple[FloatArray, ...], config: JudgeConfig, plan: Plan
) -> BoolArray:
    used = used_intervals(list(plan.weights), True)
    path = judge_path(ArmArrays.of(*b[:3]), ArmArrays.of(*c[:3]), b[3], c[3], used, config)
    out: BoolArray = path.regression
    return out


def _counts(
    rng: np.random.Generator, plan: Plan, reps: int, p_b: float, p_c: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    w = plan.weights / 100.0
    nb = rng.poisson(np.broadcast_to(REQUESTS_PER_INTERVAL * (1 - w), (reps, plan.looks)))
    nc = rng.poisson(np.broadcast_to(REQUESTS_PER_INTERVAL * w, (reps, plan.looks)))
    return (nb.astype(float), rng.binomial(nb, p_b).astype(float), nc.astype(float),
            rng.binomial(nc, p_c).astype(float))  # fmt: skip


def _guardrail(counts: tuple[FloatArray, ...], null: DiffNull, alpha: float, plan: Plan) -> BoolArray:
    used = used_intervals(list(plan.weights), True)
    path = diff_path(*counts, used, null)
    out: BoolArray = path.log_p_regression <= math.log(alpha)
    return out


def _summarise(flags: dict[str, BoolArray], canary: FloatArray) -> Result:
    any_flag = np.logical_or.reduce(list(flags.values()))
    first = _first(any_flag)
    hit = first >= 0
    k, n = int(hit.sum()), len(first)
    look = float(first[hit].mean() + 1) if k else None
    cum = np.cumsum(canary, axis=-1)
    requests = float(cum[np.flatnonzero(hit), first[hit]].mean()) if k else None
    requests = requests if requests is not None and math.isfinite(requests) else None
    by = {name: float(f.any(axis=-1).mean()) for name, f in flags.items()}
    return Result(k / n, _ci(k, n), look, requests, by)


def run(reps: int, null_reps: int, seed: int, plan: Plan = DEFAULT_PLAN) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    base = classifier_pmf(0.4, 1.5, 0.01)
    slow_c = float(1 - stats.norm.cdf(stats.norm.ppf(1 - SLOW_BASE) - math.log(2) / LATENCY_SIGMA))
    out: dict[str, object] = {
        "plan": {
            "looks": plan.looks,
            "weights": list(plan.step_weights),
            "looks_per_step": plan.looks_per_step,
            "requests_per_interval": REQUESTS_PER_INTERVAL,
            "labelled_per_interval": LABELLED_PER_INTERVAL,
        },
        "alpha_rollback": ALPHA,
    }

    # 1. One class of 5 30% worse, pooled mean equal: pooled loss + 5 class slots + 2 guardrails.
    m = 1 + 5 + 2
    others = 1 - 0.3 * CLASS_SHARES_5[WORSE_CLASS] / (1 - CLASS_SHARES_5[WORSE_CLASS])
    pmfs_c = [base.scaled(1.3 if k == WORSE_CLASS else others) for k in range(5)]
    arms = _loss_arms(rng, plan, reps, [base] * 5, pmfs_c, CLASS_SHARES_5)
    pooled_b = tuple(sum(a[0][i] for a in arms) for i in range(4))
    pooled_c = tuple(sum(a[1][i] for a in arms) for i in range(4))
    share = split_alpha(ALPHA, m)
    pooled = JudgeConfig(relative_margin=POOLED_MARGIN, alpha_rollback=share)
    per_class = JudgeConfig(
        relative_margin=CLASS_MARGIN, alpha_rollback=share, min_samples_before_rollback=CLASS_MIN_SAMPLES,
        min_samples_before_promote=CLASS_MIN_SAMPLES, catastrophic_alpha=0.001 / 5,
    )  # fmt: skip
    flags = {"pooled loss": _judge(pooled_b, pooled_c, pooled, plan)}
    for k, (b, c) in enumerate(arms):
        flags[f"class {k}"] = _judge(b, c, per_class, plan)
    out["class_30pct_worse"] = _summarise(flags, pooled_c[0]).as_dict() | {"checks": m}

    # 2. Error rate +1 point at a 0.5% baseline; 3. p95 doubled (fraction slower than the old p95).
    for name, (p_b, p_c, null) in {
        "errors_plus_1pt": (ERROR_BASE, ERROR_BASE + 0.01, DiffNull.absolute(ERROR_MARGIN)),
        "p95_doubled": (SLOW_BASE, slow_c, DiffNull.relative_to_baseline(SLOW_RELATIVE)),
    }.items():
        counts = _counts(rng, plan, reps, p_b, p_c)
        flags = {name: _guardrail(counts, null, share, plan)}
        out[name] = _summarise(flags, counts[2]).as_dict() | {"checks": m, "canary_rate": p_c}

    # 4. Nothing regresses, 6 checks: pooled loss, errors, fraction slower, 3 class slots.
    m = 6
    share = split_alpha(ALPHA, m)
    pooled = JudgeConfig(relative_margin=POOLED_MARGIN, alpha_rollback=share)
    per_class = JudgeConfig(
        relative_margin=CLASS_MARGIN, alpha_rollback=share, min_samples_before_rollback=CLASS_MIN_SAMPLES,
        min_samples_before_promote=CLASS_MIN_SAMPLES, catastrophic_alpha=0.001 / 3,
    )  # fmt: skip
    flags = {}
    for chunk in range(0, null_reps, reps):
        r = min(reps, null_reps - chunk)
        arms = _loss_arms(rng, plan, r, [base] * 3, [base] * 3, CLASS_SHARES_3)
        pb = tuple(sum(a[0][i] for a in arms) for i in range(4))
        pc = tuple(sum(a[1][i] for a in arms) for i in range(4))
        part = {"pooled loss": _judge(pb, pc, pooled, plan)}
        for k, (b, c) in enumerate(arms):
            part[f"class {k}"] = _judge(b, c, per_class, plan)
        errors, slower = DiffNull.absolute(ERROR_MARGIN), DiffNull.relative_to_baseline(SLOW_RELATIVE)
        part["errors"] = _guardrail(_counts(rng, plan, r, ERROR_BASE, ERROR_BASE), errors, share, plan)
        part["slower"] = _guardrail(_counts(rng, plan, r, SLOW_BASE, SLOW_BASE), slower, share, plan)
        for key, f in part.items():
            flags[key] = np.concatenate([flags[key], f]) if key in flags else f
    null = _summarise(flags, np.full((null_reps, plan.looks), np.nan))  # no canary count shown here
    out["null_6_checks"] = null.as_dict() | {"checks": m, "within_alpha": null.rate <= ALPHA}

    # Guardrails exactly on their margins (the hardest nulls), one check at the full alpha.
    on_margin = {
        "errors_on_margin": (ERROR_BASE, ERROR_BASE + ERROR_MARGIN, DiffNull.absolute(ERROR_MARGIN)),
        "slower_on_margin": (
            SLOW_BASE,
            SLOW_BASE * (1 + SLOW_RELATIVE),
            DiffNull.relative_to_baseline(SLOW_RELATIVE),
        ),
    }
    for name, (p_b, p_c, null_h) in on_margin.items():
        counts = _counts(rng, plan, null_reps, p_b, p_c)
        res = _summarise({name: _guardrail(counts, null_h, ALPHA, plan)}, counts[2])
        out[name] = res.as_dict() | {"checks": 1}
    return out


def report(results: dict[str, object]) -> str:
    head = ("scenario", "checks", "rolled back", "95% CI", "mean look", "canary n")
    lines = [f"{head[0]:<22}{head[1]:>7}{head[2]:>13}{head[3]:>20}{head[4]:>11}{head[5]:>11}"]
    for name, r in results.items():
        if not isinstance(r, dict) or "rate" not in r:
            continue
        ci = r["ci"]
        look = "-" if r["mean_look"] is None else f"{r['mean_look']:.1f}"
        n = "-" if r["mean_canary_requests"] is None else f"{r['mean_canary_requests']:,.0f}"
        interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]"
        lines.append(f"{name:<22}{r['checks']:>7}{r['rate']:>13.4f}{interval:>20}{look:>11}{n:>11}")
    return "\n".join(lines)


def main(reps: int, null_reps: int, seed: int, out_dir: Path, quick: bool) -> int:
    """`detection.py --guardrails`: print the table and write detection-guardrails.json."""
    if quick:
        reps, null_reps = 500, 1000
    started = time.perf_counter()
    results = run(min(reps, 2000), null_reps, seed)
    results["wall_s"] = time.perf_counter() - started
    print(report(results))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "detection-guardrails.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {out_dir / 'detection-guardrails.json'}; wall time {results['wall_s']:.0f} s")
    return 0
