"""Detection benchmark: lossgate's sequential judge against the usual canary rules, on the same
simulated rollouts (docs/judge.md, "The detection benchmark").

    .venv/bin/python bench/detection.py            # full size: the count sweep, then the rules
    .venv/bin/python bench/detection.py --quick    # fewer replications, for development
    .venv/bin/python bench/detection.py --labelled 200 --looks-per-step 50 --no-sweep

The count sweep runs the judge (and the judge before the bounded test) from 5 to 30,000 labelled
canary predictions per interval, on three heavy-tailed loss distributions, with and without weight
changes and with a diurnal mix; its table is the headline. The rules comparison then runs every rule
on one plan. Writes bench/results/detection.json (detection-<labelled>.json for another plan) and
detection.png (delay and power against effect size, per rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from _detection_plot import JUDGE, JUDGE_BEFORE, JUDGE_MATCHED, RULES, plot
from _legacy_judge import LegacyConfig
from _rules import (
    ALPHA,
    Outcome,
    bonferroni,
    calibrate_threshold,
    fixed_horizon,
    kayenta,
    naive_welch,
    pocock,
    pocock_constant,
    run_judge,
    run_legacy,
    sprt,
    threshold_rule,
)
from _sim import (
    DEFAULT_PLAN,
    EASY,
    INTERVAL_S,
    RELATIVE_MARGIN,
    Plan,
    Scenario,
    Streams,
    scenarios,
    simulate,
)
from _sweep import plot_sweep, run_sweep, sweep_headline
from lossgate.core.bounded import information_to_cross
from lossgate.core.judge import JudgeConfig

RESULTS = Path(__file__).resolve().parent / "results"
TYPICAL_THRESHOLD_FAILURES = 3  # Argo failureLimit / Flagger threshold as commonly configured
KAYENTA_EVERY = 2  # Kayenta-style analysis every 2 intervals (1 minute)

KAYENTA_MAX_LOOKS = 100  # its pairwise Hodges-Lehmann cost grows with looks squared


@dataclass(frozen=True)
class Metrics:
    rate: float  # rollouts rolled back by the end of the ramp (false rollbacks under a null, else power)
    rate_low: float
    rate_high: float
    rolled: int
    replications: int
    median_intervals: float | None
    mean_intervals: float | None
    median_canary_samples: float | None
    mean_canary_samples: float | None
    promoted: float
    mean_information_at_stop: float
    ratio: float | None  # efficiency ratio to the SPRT limit (regressions only)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def metrics(outcome: Outcome, s: Streams, reps: int) -> Metrics:
    look = outcome.rollback_look
    hit = look >= 0
    k = int(hit.sum())
    low, high = wilson(k, reps)
    canary_cum = np.cumsum(s.nc, axis=-1)
    rows = np.flatnonzero(hit)
    intervals = (look[hit] + 1).astype(np.float64)
    samples = canary_cum[rows, look[hit]]
    info_stop = s.oracle_information[np.arange(reps), outcome.stop_look]
    return Metrics(
        rate=k / reps,
        rate_low=low,
        rate_high=high,
        rolled=k,
        replications=reps,
        median_intervals=float(np.median(intervals)) if k else None,
        mean_intervals=float(intervals.mean()) if k else None,
        median_canary_samples=float(np.median(samples)) if k else None,
        mean_canary_samples=float(samples.mean()) if k else None,
        promoted=float(outcome.promoted.mean()),
        mean_information_at_stop=float(info_stop.mean()),
        ratio=None,
    )


def efficiency_ratio(m: Metrics, boundary: Metrics, effect: float) -> float | None:
    """E[I_stop] d^2 / 2 / kl(1 - beta_hat || alpha_hat): 1 is Wald's limit for the error rates the
    rule actually achieved (alpha_hat at the margin, beta_hat here); rates smoothed by +0.5/+1."""
    alpha_hat = (boundary.rolled + 0.5) / (boundary.replications + 1)
    power = (m.rolled + 0.5) / (m.replications + 1)
    if power <= alpha_hat:
        return None
    return m.mean_information_at_stop * effect * effect / 2 / kl(power, alpha_hat)


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def print_table(title: str, scenario: Scenario, results: dict[str, Metrics]) -> None:
    kind = "false rollbacks" if scenario.null else "power"
    effect = scenario.theta / scenario.margin
    print(
        f"\n=== {title}: theta = {scenario.theta:+.4f} nats, margin {scenario.margin:.4f} "
        f"({effect:+.2f} margins), {scenario.replications} rollouts ==="
    )
    header = (
        f"{'rule':34} {kind + ' (95% CI)':>26} {'med/mean intervals':>19} "
        f"{'med/mean canary samples':>24} {'promoted':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for rule, m in results.items():
        rate = f"{m.rate:.4f} [{m.rate_low:.4f},{m.rate_high:.4f}]"
        delay = f"{fmt(m.median_intervals, '.0f')}/{fmt(m.mean_intervals, '.1f')}"
        samples = f"{fmt(m.median_canary_samples, '.0f')}/{fmt(m.mean_canary_samples, '.0f')}"
        print(f"{rule:34} {rate:>26} {delay:>19} {samples:>24} {m.promoted:>9.3f} {fmt(m.ratio, '.2f'):>6}")


def planned_information(steps: list[tuple[float, float]], variance: float) -> float:
    """Information a plan is expected to yield: sum over steps of n_s p_s (1 - p_s) / sigma^2, with
    n_s the labelled samples of both arms during the step and p_s its canary fraction."""
    return sum(n * p * (1.0 - p) for n, p in steps) / variance


def predicted_power(effect: float, information: float, margin: float, alpha: float) -> float:
    """Power of the test judged from the last look alone, in the normal approximation of each grid
    bet: theta_hat ~ N(theta, 1/I) must exceed the excess at which the test crosses at I."""
    b = optimize.brentq(
        lambda e: information_to_cross(e, margin, 0.0, alpha) - information, 1e-9, 10.0, xtol=1e-15
    )
    return float(special.ndtr((effect - b) * math.sqrt(information)))


def plan_numbers(plan: Plan) -> dict[str, Any]:
    """The planning numbers a user would compute before the rollout."""
    var = EASY.var
    per_step = plan.labelled_per_interval * plan.looks_per_step
    steps = [(per_step, w / 100) for w in plan.step_weights]
    i_star = planned_information(steps[:3], var)  # information near the end of the 25% step
    i_end = planned_information(steps, var)
    margin = RELATIVE_MARGIN * EASY.mean
    return {
        "labelled_per_interval": plan.labelled_per_interval,
        "interval_s": INTERVAL_S,
        "steps_percent": list(plan.step_weights),
        "looks_per_step": plan.looks_per_step,
        "relative_margin": RELATIVE_MARGIN,
        "margin_nats": margin,
        "loss_mean": EASY.mean,
        "loss_sd": math.sqrt(var),
        "loss_skew": EASY.moment(3),
        "loss_excess_kurtosis": EASY.moment(4) - 3,
        "tail_rate_above_4.6": EASY.tail_rate,
        "planned_information_25pct_end": i_star,
        "planned_information_ramp_end": i_end,
        "predicted_power_at_2_margins_last_look": predicted_power(margin, i_end, margin, ALPHA),
    }


def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    the_plan = plan_numbers(plan)
    print(
        "plan:",
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in the_plan.items()),
    )
    judge_cfg = JudgeConfig(relative_margin=RELATIVE_MARGIN)
    legacy_cfg = LegacyConfig(relative_margin=RELATIVE_MARGIN)
    all_scenarios = scenarios(1, 1, plan.looks)
    cal_stream = simulate(all_scenarios[0], args.calibration_reps, seed=args.seed + 999, plan=plan)
    calibrated = calibrate_threshold(cal_stream, TYPICAL_THRESHOLD_FAILURES, target=0.01)
    c_pocock = pocock_constant(plan)
    # "At equal false-rollback rate": the judge is conservative (Ville's bound is loose over 80 discrete
    # looks), so also run it at the alpha_rollback that gives 1% actual false rollbacks at the margin,
    # found on separate boundary rollouts. A rollout is rolled back iff the running-minimum p-value at
    # the last look is <= alpha (the quota is met by then), so that alpha is a quantile.
    boundary_scenario = next(sc for sc in all_scenarios if "boundary" in sc.name)
    _, cal_path = run_judge(
        simulate(boundary_scenario, args.calibration_reps, seed=args.seed + 998, plan=plan), judge_cfg
    )
    matched_alpha = float(np.exp(np.quantile(cal_path.log_p_regression[:, -1], 0.01)))
    matched_cfg = dataclasses.replace(judge_cfg, alpha_rollback=min(matched_alpha, 0.49))
    z_bonferroni = special.ndtri(1 - ALPHA / plan.looks)
    print(
        f"calibrated threshold (1% false rollbacks on {args.calibration_reps} separate equal-canary "
        f"rollouts): {calibrated:.3f}; Pocock constant {c_pocock:.3f} vs Bonferroni {z_bonferroni:.3f}; "
        f"judge alpha for 1% actual false rollbacks at the margin: {matched_alpha:.4f}"
    )

    out: dict[str, Any] = {
        "plan": the_plan,
        "rules": {
            "calibrated_threshold": calibrated,
            "threshold_failures": TYPICAL_THRESHOLD_FAILURES,
            "pocock_constant": c_pocock,
            "judge_alpha_for_1pct_actual": matched_alpha,
            "alpha": ALPHA,
            "kayenta_every_intervals": KAYENTA_EVERY,
            "judge_config": {k: v for k, v in judge_cfg.__dict__.items()},
        },
        "scenarios": {},
    }
    boundary: dict[str, Metrics] = {}
    for i, sc in enumerate(scenarios(args.null_reps, args.reps, plan.looks)):
        t0 = time.perf_counter()
        reps = sc.replications
        s = simulate(sc, reps, seed=args.seed + i, plan=plan)
        judge_out, path = run_judge(s, judge_cfg)
        before_out, _ = run_legacy(s, legacy_cfg)
        matched_out, _ = run_judge(s, matched_cfg)
        effect = sc.theta - sc.margin
        outcomes: dict[str, Outcome] = {
            JUDGE: judge_out,
            JUDGE_BEFORE: before_out,
            JUDGE_MATCHED: matched_out,
            RULES[3]: naive_welch(s),
            RULES[4]: fixed_horizon(path),
            RULES[5]: threshold_rule(s, RELATIVE_MARGIN, TYPICAL_THRESHOLD_FAILURES),
            RULES[6]: threshold_rule(s, calibrated, TYPICAL_THRESHOLD_FAILURES),
            RULES[8]: bonferroni(path),
            RULES[9]: pocock(path, c_pocock),
            # Under a null the SPRT is designed for theta1 = 2 margins (it must assume some alternative).
            RULES[10]: sprt(path, sc.margin if sc.null else effect),
        }
        if plan.looks <= KAYENTA_MAX_LOOKS:
            outcomes[RULES[7]] = kayenta(s, KAYENTA_EVERY)
        results = {rule: metrics(o, s, reps) for rule, o in outcomes.items()}
        if "boundary" in sc.name:
            boundary = results
        if not sc.null and boundary:
            results = {
                rule: Metrics(**{**m.__dict__, "ratio": efficiency_ratio(m, boundary[rule], effect)})
                for rule, m in results.items()
            }
        print_table(sc.name, sc, results)
        print(f"({time.perf_counter() - t0:.1f} s)")
        out["scenarios"][sc.name] = {
            "theta": sc.theta,
            "margin": sc.margin,
            "effect_in_margins": sc.theta / sc.margin,
            "null": sc.null,
            "replications": reps,
            "label_delay": sc.label_delay,
            "diurnal": sc.hard_share is not None,
            "catastrophic_guard_fired": float(path.catastrophic.any(axis=-1).mean()),
            "catastrophic_guard_fired_before": float(run_legacy(s, legacy_cfg)[1].any(axis=-1).mean()),
            "rules": {rule: m.__dict__ for rule, m in results.items()},
        }
    out["rules_wall_s"] = time.perf_counter() - started
    return out


def headline(out: dict[str, Any]) -> str:
    sc = out["scenarios"]
    names = list(sc)
    equal, boundary, two = names[0], names[2], names[3]
    diurnal = next(n for n in names if n.startswith("diurnal"))
    ten = next(n for n in names if n == "+10%")
    five = next(n for n in names if n == "+5%")
    rows = [
        f"{'rule':34} {'FR equal':>9} {'FR bound':>9} {'FR diurn':>9} {'power 2d':>9} "
        f"{'samples@2d':>11} {'samples@10%':>12} {'ratio 2d':>9} {'ratio 5%':>9} {'ratio 10%':>9}"
    ]
    rows.append("-" * len(rows[0]))
    for rule in RULES:
        if rule not in sc[equal]["rules"]:
            continue

        def g(name: str, key: str, rule: str = rule) -> Any:
            return sc[name]["rules"][rule][key]

        rows.append(
            f"{rule:34} {g(equal, 'rate'):>9.4f} {g(boundary, 'rate'):>9.4f} {g(diurnal, 'rate'):>9.4f} "
            f"{g(two, 'rate'):>9.3f} {fmt(g(two, 'mean_canary_samples'), '.0f'):>11} "
            f"{fmt(g(ten, 'mean_canary_samples'), '.0f'):>12} {fmt(g(two, 'ratio'), '.2f'):>9} "
            f"{fmt(g(five, 'ratio'), '.2f'):>9} {fmt(g(ten, 'ratio'), '.2f'):>9}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--null-reps", type=int, default=10_000, help="replications of each null scenario")
    ap.add_argument("--reps", type=int, default=10_000, help="replications of each regression scenario")
    ap.add_argument("--calibration-reps", type=int, default=5_000)
    ap.add_argument("--sweep-null-reps", type=int, default=2_000, help="per null cell of the count sweep")
    ap.add_argument("--sweep-reps", type=int, default=500, help="per regression cell of the count sweep")
    ap.add_argument("--labelled", type=float, default=DEFAULT_PLAN.labelled_per_interval)
    ap.add_argument("--looks-per-step", type=int, default=DEFAULT_PLAN.looks_per_step)
    ap.add_argument("--no-sweep", action="store_true", help="only the rules comparison")
    ap.add_argument("--sweep-only", action="store_true", help="only the count sweep")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--quick", action="store_true", help="fewer replications (development)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from an existing detection.json")
    ap.add_argument("--guardrails", action="store_true", help="only the guardrail and per-class scenarios")
    ap.add_argument("--paired", action="store_true", help="only paired (shadow) against unpaired detection")
    ap.add_argument("--brier", action="store_true", help="only the Brier (calibration) gate's scenarios")
    ap.add_argument("--tokens", action="store_true", help="only the language-model loss-per-token scenarios")
    args = ap.parse_args(argv)
    if args.brier:
        import _calibration

        return _calibration.main(
            min(args.reps, 2000), min(args.null_reps, 2000), args.seed, args.out, args.quick
        )
    if args.tokens:
        import _token_loss

        return _token_loss.main(
            min(args.reps, 400), min(args.null_reps, 2000), args.seed, args.out, args.quick
        )
    if args.paired:
        import _paired

        return _paired.main(min(args.reps, 2000), min(args.null_reps, 2000), args.seed, args.out, args.quick)
    if args.guardrails:
        import _guardrails

        return _guardrails.main(args.reps, args.null_reps, args.seed, args.out, args.quick)
    plan = Plan(labelled_per_interval=args.labelled, looks_per_step=args.looks_per_step)
    name = "detection" if plan == DEFAULT_PLAN else f"detection-{args.labelled:g}"
    if args.plot_only:
        saved = json.loads((args.out / f"{name}.json").read_text())
        if "sweep" in saved:
            plot_sweep(saved["sweep"], args.out / "detection-sweep.png")
        return 0 if plot(saved, args.out / f"{name}.png") else 1
    if args.quick:
        args.null_reps, args.reps, args.calibration_reps = 1000, 500, 1000
        args.sweep_null_reps, args.sweep_reps = 500, 200
    started = time.perf_counter()
    out: dict[str, Any] = {}
    tables = []
    if not args.no_sweep:
        out["sweep"] = run_sweep(args.sweep_null_reps, args.sweep_reps, args.seed)
        tables.append(sweep_headline(out["sweep"]))
    if not args.sweep_only:
        out.update(run(args, plan))
        tables.append(
            "rules on one plan (FR = false rollbacks; d = margin; samples = mean labelled canary "
            "samples at rollback)\n" + headline(out)
        )
    out["headline"] = "\n\n".join(tables)
    out["wall_s"] = time.perf_counter() - started
    print("\n=== headline ===")
    print(out["headline"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    plotted = not args.sweep_only and plot(out, args.out / f"{name}.png")
    if "sweep" in out:
        plot_sweep(out["sweep"], args.out / "detection-sweep.png")
    png = f" and {args.out / (name + '.png')}" if plotted else ""
    print(f"\nwrote {args.out / (name + '.json')}{png}")
    print(f"wall time {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
