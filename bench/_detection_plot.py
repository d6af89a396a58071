"""The detection benchmark's rule names and its power/delay plot (bench/detection.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from _rules import ALPHA

JUDGE = "lossgate judge"
JUDGE_BEFORE = "lossgate before (normal mixture)"
JUDGE_MATCHED = "lossgate, alpha for 1% actual"
RULES = (
    JUDGE,
    JUDGE_BEFORE,
    JUDGE_MATCHED,
    "naive repeated Welch z",
    "fixed horizon (end of ramp)",
    "threshold, typical (2%, 3 fails)",
    "threshold, calibrated to 1%",
    "Kayenta-style Mann-Whitney",
    "Bonferroni (every look)",
    "Pocock (every look)",
    "SPRT knowing theta1 (limit)",
)


def plot(out: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return False
    sc = out["scenarios"]
    # The plain scale-up scenarios from the boundary upward (no delays, no mix, no tail-only).
    curve = [
        n
        for n, v in sc.items()
        if not (v["label_delay"] or v["diurnal"] or n.startswith("tail"))
        and v["effect_in_margins"] >= 1 - 1e-9
    ]
    curve.sort(key=lambda n: sc[n]["effect_in_margins"])
    x = [sc[n]["effect_in_margins"] for n in curve]
    fig, (ax_power, ax_delay) = plt.subplots(1, 2, figsize=(13, 5.2))
    # The judge in black, its variants in greys, the other rules in distinct colours.
    looks = {
        JUDGE: ("black", "-", "o", 2.6),
        JUDGE_BEFORE: ("0.5", "--", "o", 1.4),
        JUDGE_MATCHED: ("0.3", "-.", "o", 1.2),
    }
    others = [
        "tab:red",
        "tab:brown",
        "tab:pink",
        "tab:purple",
        "tab:olive",
        "tab:cyan",
        "tab:blue",
        "tab:orange",
    ]
    markers = ["s", "s", "^", "^", "v", "D", "d", "x"]
    for rule, colour, marker in zip(RULES[3:], others, markers, strict=True):
        looks[rule] = (colour, "-" if rule != RULES[-1] else ":", marker, 1.2)
    for rule in RULES:
        if rule not in sc[curve[0]]["rules"]:
            continue
        colour, line, marker, lw = looks[rule]
        power = [sc[n]["rules"][rule]["rate"] for n in curve]
        delay = [sc[n]["rules"][rule]["mean_canary_samples"] for n in curve]
        style = {"color": colour, "ls": line, "marker": marker, "lw": lw, "ms": 4, "label": rule}
        ax_power.plot(x, power, **style)
        # Delay only for regressions: at the boundary the "detections" are the few false rollbacks.
        seen = [(xi, d) for xi, d in zip(x, delay, strict=True) if d and xi > 1 + 1e-9]
        ax_delay.plot([a for a, _ in seen], [d for _, d in seen], **style)
    ax_power.axhline(0.9, color="grey", lw=0.6)
    ax_power.axhline(ALPHA, color="grey", lw=0.6, ls=":")
    ax_power.set_xscale("log")
    ax_power.set_xlabel("true regression (multiples of the margin; 1 = the boundary, H0)")
    ax_power.set_ylabel("rolled back by the end of the ramp")
    ax_power.set_title("Rollback rate against effect size")
    ax_delay.set_xscale("log")
    ax_delay.set_yscale("log")
    ax_delay.set_xlabel("true regression (multiples of the margin)")
    ax_delay.set_ylabel("mean labelled canary samples at rollback (detected runs)")
    ax_delay.set_title("Detection delay against effect size")
    ax_power.legend(fontsize=7.5, loc="lower right")
    for ax in (ax_power, ax_delay):
        ax.grid(True, which="both", lw=0.3)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:.3g}" for v in x])
        ax.minorticks_off()
    p = out["plan"]
    fig.suptitle(
        f"lossgate detection benchmark: steps {p['steps_percent']}% x {p['looks_per_step']} looks of "
        f"{p['labelled_per_interval']:.0f} labels, margin {p['relative_margin']:.0%} of mean loss, "
        f"alpha {ALPHA}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
