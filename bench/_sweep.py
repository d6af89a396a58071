"""The count sweep of the detection benchmark: false rollbacks and detection of the judge (and of the
judge before the bounded test) from 5 to 30,000 labelled canary predictions per interval, on three
heavy-tailed loss distributions, with and without weight changes, and with a diurnal mix."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _legacy_judge import LegacyConfig
from _rules import Outcome, run_judge, run_legacy
from _sim import (
    EASY,
    RELATIVE_MARGIN,
    LossPmf,
    Plan,
    Scenario,
    Streams,
    beta_mixture_pmf,
    classifier_pmf,
    diurnal_hard_share,
    simulate,
    softmax_pmf,
)
from lossgate.core.judge import JudgeConfig

CANARY_COUNTS = (5, 20, 50, 200, 2_000, 30_000)  # labelled canary predictions per interval
DISTRIBUTIONS: dict[str, LossPmf] = {
    "-ln p, p~0.99B(8,2)+0.01B(.5,5)": beta_mixture_pmf(),
    "binary, 0.5% label noise": classifier_pmf(0.4, 1.5, 0.005),
    "10-class softmax, 2% noise": softmax_pmf(10, 0.02),
}
# (name, canary scale): equal arms, the boundary (H0's edge), +2 margins and +10%.
EFFECTS = (
    ("equal", 1.0),
    ("boundary", 1 + RELATIVE_MARGIN),
    ("+2d", 1 + 2 * RELATIVE_MARGIN),
    ("+10%", 1.10),
)
NULL_EFFECTS = ("equal", "boundary")


def plans(count: int) -> dict[str, Plan]:
    """Fixed split: a third of the traffic to the canary for 240 looks (baseline twice the canary).
    Ramp: 5/10/25/50% for 50 looks each (200 looks), `count` canary labels a look in the 5% step."""
    return {
        "fixed 1/3": Plan(labelled_per_interval=3.0 * count, step_weights=(100 / 3,), looks_per_step=240),
        "ramp 5-50%": Plan(labelled_per_interval=20.0 * count, looks_per_step=50),
    }


@dataclass(frozen=True)
class Cell:
    rate: float  # rolled back by the end (false rollbacks under a null, else power)
    rolled: int
    replications: int
    mean_canary_samples: float | None  # at rollback, over the rollouts that rolled back
    catastrophic: float  # rollouts in which the tail guard fired

    @staticmethod
    def of(outcome: Outcome, guard: np.ndarray, s: Streams) -> Cell:
        hit = outcome.rollback_look >= 0
        rows = np.flatnonzero(hit)
        samples = np.cumsum(s.nc, axis=-1)[rows, outcome.rollback_look[hit]]
        return Cell(
            rate=float(hit.mean()),
            rolled=int(hit.sum()),
            replications=len(hit),
            mean_canary_samples=float(samples.mean()) if len(rows) else None,
            catastrophic=float(guard.any(axis=-1).mean()),
        )


def _judge_both(s: Streams) -> dict[str, Cell]:
    new, path = run_judge(s, JudgeConfig(relative_margin=RELATIVE_MARGIN))
    old, old_guard = run_legacy(s, LegacyConfig(relative_margin=RELATIVE_MARGIN))
    return {"after": Cell.of(new, path.catastrophic, s), "before": Cell.of(old, old_guard, s)}


def run_sweep(null_reps: int, reps: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    print("\n=== count sweep: false rollbacks (FR) and detection, judge after / before ===")
    print(f"{'canary/look':>11} {'plan':11} {'distribution':32} {'effect':9} {'after':>8} {'before':>8}"
          f" {'samples after/before':>22} {'guard':>6}")  # fmt: skip
    for i, count in enumerate(CANARY_COUNTS):
        for plan_name, plan in plans(count).items():
            cases = [(d, pmf, name, scale) for d, pmf in DISTRIBUTIONS.items() for name, scale in EFFECTS]
            if plan_name.startswith("ramp"):  # the diurnal mix needs steps whose splits differ
                cases.append(("diurnal mix (easy/hard)", EASY, "equal", 1.0))
            for j, (dist, pmf, effect, scale) in enumerate(cases):
                mix = diurnal_hard_share(plan.looks) if dist.startswith("diurnal") else None
                sc = Scenario(effect, pmf.scaled(scale), baseline=pmf, hard_share=mix)
                n = null_reps if effect in NULL_EFFECTS else reps
                s = simulate(sc, n, seed=seed + 1000 * i + 37 * j + (plan_name == "fixed 1/3"), plan=plan)
                cells = _judge_both(s)
                a, b = cells["after"], cells["before"]
                row = {
                    "canary_per_look": count,
                    "plan": plan_name,
                    "distribution": dist,
                    "effect": effect,
                    "theta": sc.theta,
                    "margin": sc.margin,
                    "null": effect in NULL_EFFECTS,
                    **{k: v.__dict__ for k, v in cells.items()},
                }
                rows.append(row)
                samples = f"{_f(a.mean_canary_samples)}/{_f(b.mean_canary_samples)}"
                print(f"{count:>11} {plan_name:11} {dist:32} {effect:9} {a.rate:>8.4f} {b.rate:>8.4f}"
                      f" {samples:>22} {a.catastrophic:>6.4f}")  # fmt: skip
    return {"rows": rows, "null_reps": null_reps, "reps": reps, "wall_s": time.perf_counter() - started}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def sweep_headline(sweep: dict[str, Any]) -> str:
    """One row per count: the worst false-rollback rate over distributions, plans and the diurnal
    mix (equal arms and at the margin), the tail guard's worst, and detection at +2 margins and +10%
    on the ramp with the first distribution (power, mean canary samples at rollback)."""
    rows = sweep["rows"]
    first = next(iter(DISTRIBUTIONS))
    out = [
        f"count sweep ({sweep['null_reps']} rollouts per null cell, {sweep['reps']} per regression cell; "
        "alpha_rollback 0.01, guard alpha 0.001)",
        f"{'canary/look':>11} {'FR equal':>17} {'FR boundary':>17} {'guard FR':>9} "
        f"{'power +2d':>15} {'power +10%':>15} {'samples@+10%':>17}",
        f"{'':>11} {'after / before':>17} {'after / before':>17} {'after':>9} "
        f"{'after / before':>15} {'after / before':>15} {'after / before':>17}",
    ]
    for count in CANARY_COUNTS:
        mine = [r for r in rows if r["canary_per_look"] == count]

        def worst(effect: str, side: str, mine: list[dict[str, Any]] = mine) -> float:
            return max(r[side]["rate"] for r in mine if r["effect"] == effect)

        def ramp(effect: str, side: str, key: str, mine: list[dict[str, Any]] = mine) -> Any:
            return next(
                r[side][key]
                for r in mine
                if r["effect"] == effect and r["plan"].startswith("ramp") and r["distribution"] == first
            )

        guard = max(r["after"]["catastrophic"] for r in mine if r["null"])
        delay = [_f(ramp("+10%", side, "mean_canary_samples")) for side in ("after", "before")]
        samples = "/".join(delay)
        out.append(
            f"{count:>11} {worst('equal', 'after'):>8.4f}/{worst('equal', 'before'):<8.4f} "
            f"{worst('boundary', 'after'):>8.4f}/{worst('boundary', 'before'):<8.4f} {guard:>9.4f} "
            f"{ramp('+2d', 'after', 'rate'):>7.3f}/{ramp('+2d', 'before', 'rate'):<7.3f} "
            f"{ramp('+10%', 'after', 'rate'):>7.3f}/{ramp('+10%', 'before', 'rate'):<7.3f} {samples:>17}"
        )
    return "\n".join(out)


def plot_sweep(sweep: dict[str, Any], path: Path) -> bool:
    """False rollbacks at the margin against the canary count, after and before, per distribution and
    plan; alpha as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = sweep["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for ax, effect in zip(axes, NULL_EFFECTS, strict=True):
        keys = sorted({(r["distribution"], r["plan"]) for r in rows if r["effect"] == effect})
        for n, (dist, plan) in enumerate(keys):
            mine = sorted(
                (r for r in rows if (r["distribution"], r["plan"], r["effect"]) == (dist, plan, effect)),
                key=lambda r: r["canary_per_look"],
            )
            x = [r["canary_per_look"] for r in mine]
            colour = colours[list(dict.fromkeys(d for d, _ in keys)).index(dist) % len(colours)]
            ls = "-" if plan.startswith("ramp") else ":"
            ax.plot(x, [r["after"]["rate"] for r in mine], color=colour, ls=ls, marker="o", lw=2,
                    label=f"after: {dist}, {plan}")  # fmt: skip
            ax.plot(x, [r["before"]["rate"] for r in mine], color=colour, ls=ls, marker="x", lw=0.8,
                    alpha=0.6, label=f"before: {dist}, {plan}" if n < 0 else None)  # fmt: skip
        ax.axhline(0.01, color="red", lw=1, label="alpha_rollback = 0.01")
        ax.set_xscale("log")
        ax.set_xlabel("labelled canary predictions per interval (looks: 200-240)")
        ax.set_title(f"false rollbacks, {'identical arms' if effect == 'equal' else 'canary on the margin'}")
        ax.grid(True, which="both", lw=0.3)
    axes[0].set_ylabel("rolled back (o: bounded test; x, thin: normal mixture before)")
    axes[1].legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
