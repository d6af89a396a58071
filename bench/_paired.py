"""Paired (shadow phase, mirrored traffic) against unpaired (live split) detection: `detection.py --paired`.

Losses are the demo's real models' (devtools/lossgate_dev/demo/models.py: logistic regressions on
scikit-learn's bundled digits, nothing downloaded): per held-out request, the baseline's and the
canary's cross-entropy on the same input. Their correlation is measured and reported. Each scenario
resamples whole requests (both losses of one input together) from that joint population, with the
canary's losses shifted by a constant so that the population's mean difference is exactly the
scenario's theta (the correlation structure is the real one).

- paired: every labelled request is a pair (100% mirrored); core/paired.py's test on d.
- unpaired: a 50/50 live split; each labelled request is one arm's, drawn independently; the live
  judge (core/judge.py) on the two arms.

Both at the same nominal alpha (alpha_rollback 0.01, alpha_promote 0.05) with no minimum-sample
gates and without the unpaired judge's catastrophic tail-rate guard (the less regularised `good`
model makes more confident mistakes than the baseline, and that guard would roll it back whatever
its mean), so the comparison is of the two mean tests alone. Reported: labelled requests until a rollback at
theta = 2 margins, until "not worse" at theta = 0, and the false-rollback rate at theta = margin
(the null's boundary), with Wilson 95% intervals.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.judge import JudgeConfig, judge_path
from lossgate.core.paired import PairedArrays, paired_path
from lossgate.core.stratified import ArmArrays
from lossgate.instrument import cross_entropy

RELATIVE_MARGIN = 0.05  # delta: 5% of the baseline's mean loss
PER_LOOK = 500  # labelled requests per look
LOOKS = 240  # 120,000 labels at most: the unpaired arm detects nearly always within it


def demo_losses() -> dict[str, np.ndarray]:
    """Per held-out request: each demo variant's cross-entropy on it (the same inputs for all)."""
    from lossgate_dev.demo.models import traffic, train

    t = traffic()
    out = {}
    for variant in ("baseline", "good", "bad"):
        probs = train(variant).predict_proba(t.features)
        out[variant] = np.asarray(
            [cross_entropy(int(y), probabilities=p) for y, p in zip(t.labels, probs, strict=True)]
        )
    return out


def correlations(losses: dict[str, np.ndarray]) -> dict[str, Any]:
    b = losses["baseline"]
    out: dict[str, Any] = {"requests": len(b), "baseline_mean": float(b.mean())}
    for v in ("good", "bad"):
        c = losses[v]
        d = c - b
        out[v] = {
            "mean": float(c.mean()),
            "pearson": float(np.corrcoef(b, c)[0, 1]),
            "spearman": float(np.corrcoef(np.argsort(np.argsort(b)), np.argsort(np.argsort(c)))[0, 1]),
            "var_d": float(d.var()),
            "var_b_plus_var_c": float(b.var() + c.var()),
            # labels an unpaired 50/50 split needs per paired label for the same variance of the estimate
            "variance_ratio": float(2 * (b.var() + c.var()) / d.var()),
        }
    return out


def shifted(b: np.ndarray, c: np.ndarray, theta: float) -> np.ndarray:
    """c + s clipped to [0, L], with s such that the population mean of (c' - b) is exactly theta."""

    def gap(s: float) -> float:
        return float(np.clip(c + s, 0.0, MAX_LOSS_NATS).mean() - b.mean() - theta)

    s = optimize.brentq(gap, -MAX_LOSS_NATS, MAX_LOSS_NATS, xtol=1e-14)
    return np.clip(c + s, 0.0, MAX_LOSS_NATS)


def _sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.sum(-1), (x * x).sum(-1)


def simulate(b: np.ndarray, c: np.ndarray, reps: int, seed: int, config: JudgeConfig) -> dict[str, Any]:
    """Both tests on `reps` rollouts of LOOKS looks of PER_LOOK labels from the population (b, c)."""
    rng = np.random.default_rng(seed)
    pop = len(b)
    shape = (reps, LOOKS)
    pn, ps, pss, psb = (np.zeros(shape) for _ in range(4))
    un = {arm: [np.zeros(shape) for _ in range(4)] for arm in ("b", "c")}
    half = PER_LOOK // 2
    for k in range(LOOKS):
        idx = rng.integers(0, pop, (reps, PER_LOOK))  # paired: both losses of each request
        d = c[idx] - b[idx]
        pn[:, k] = PER_LOOK
        ps[:, k], pss[:, k] = _sums(d)
        psb[:, k] = b[idx].sum(-1)
        for arm, src in (("b", b), ("c", c)):  # unpaired: each arm its own requests
            x = src[rng.integers(0, pop, (reps, half))]
            n, s, ss, tail = un[arm]
            n[:, k] = half
            s[:, k], ss[:, k] = _sums(x)
            tail[:, k] = 0.0  # the tail-rate guard off: the paired test has none, and this compares means
    paired = paired_path(PairedArrays(pn, ps, pss, psb), config, config.alpha_rollback)
    nb, sb, ssb, tb = un["b"]
    nc, sc, ssc, tc = un["c"]
    used = np.ones(LOOKS, dtype=np.bool_)
    unpaired = judge_path(ArmArrays(nb, sb, ssb), ArmArrays(nc, sc, ssc), tb, tc, used, config)
    return {
        "paired": _outcome(paired.regression, paired.not_worse, PER_LOOK),
        "unpaired": _outcome(unpaired.regression, unpaired.not_worse, PER_LOOK),
    }


def _outcome(regression: np.ndarray, not_worse: np.ndarray, per_look: int) -> dict[str, Any]:
    def labels_at(flags: np.ndarray) -> dict[str, Any]:
        hit = flags.any(-1)
        first = (flags.argmax(-1) + 1) * per_look
        k, n = int(hit.sum()), len(hit)
        return {
            "rate": k / n,
            "wilson95": _wilson(k, n),
            "mean_labels": float(first[hit].mean()) if k else None,
            "median_labels": float(np.median(first[hit])) if k else None,
        }

    return {"rollback": labels_at(regression), "not_worse": labels_at(not_worse)}


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(reps: int, null_reps: int, seed: int) -> dict[str, Any]:
    losses = demo_losses()
    corr = correlations(losses)
    b, c = losses["baseline"], losses["good"]
    margin = RELATIVE_MARGIN * float(b.mean())
    config = JudgeConfig(
        margin=margin, alpha_rollback=0.01, alpha_promote=0.05,
        min_samples_before_rollback=0, min_samples_before_promote=0,
    )  # fmt: skip
    scenarios = {
        "regression_2_margins": (2 * margin, reps),
        "equal": (0.0, reps),
        "boundary": (margin, null_reps),
    }
    results = {
        name: simulate(b, shifted(b, c, theta), n, seed + i, config)
        for i, (name, (theta, n)) in enumerate(scenarios.items())
    }
    reg, eq = results["regression_2_margins"], results["equal"]

    def ratio(key: str, res: dict[str, Any]) -> float | None:
        u, p = res["unpaired"][key]["mean_labels"], res["paired"][key]["mean_labels"]
        return u / p if u and p else None

    return {
        "population": corr,
        "margin_nats": margin,
        "relative_margin": RELATIVE_MARGIN,
        "labels_per_look": PER_LOOK,
        "looks": LOOKS,
        "alpha_rollback": config.alpha_rollback,
        "alpha_promote": config.alpha_promote,
        "scenarios": results,
        "ratio_rollback_at_2_margins": ratio("rollback", reg),
        "ratio_not_worse_at_equal": ratio("not_worse", eq),
        "goal_ratio": 3.0,
    }


def headline(out: dict[str, Any]) -> str:
    pop = out["population"]
    lines = [
        f"demo digits models, {pop['requests']} held-out requests: loss correlation with the baseline "
        f"good {pop['good']['pearson']:.3f} (Spearman {pop['good']['spearman']:.3f}), "
        f"bad {pop['bad']['pearson']:.3f} (Spearman {pop['bad']['spearman']:.3f})",
        f"margin {out['margin_nats']:.4f} nats ({out['relative_margin']:.0%} of the baseline's mean), "
        f"{out['labels_per_look']} labels a look, alpha_rollback {out['alpha_rollback']}",
        f"{'scenario':<22}{'arm':<10}{'rollback rate':>15}{'labels to roll back':>21}{'not-worse rate':>16}"
        f"{'labels to not worse':>21}",
    ]
    for name, res in out["scenarios"].items():
        for arm in ("paired", "unpaired"):
            r, n = res[arm]["rollback"], res[arm]["not_worse"]
            lines.append(
                f"{name:<22}{arm:<10}{r['rate']:>15.4f}{_num(r['mean_labels']):>21}{n['rate']:>16.4f}"
                f"{_num(n['mean_labels']):>21}"
            )
    lines.append(
        f"unpaired / paired labels: rollback at +2 margins "
        f"{_num(out['ratio_rollback_at_2_margins'], '.2f')}x, "
        f"not worse at theta 0 {_num(out['ratio_not_worse_at_equal'], '.2f')}x (goal >= 3x)"
    )
    return "\n".join(lines)


def _num(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def main(reps: int, null_reps: int, seed: int, out_dir: Path, quick: bool) -> int:
    import json

    if quick:
        reps, null_reps = 200, 500
    started = time.perf_counter()
    out = run(reps, null_reps, seed)
    out["reps"], out["null_reps"] = reps, null_reps
    out["headline"] = headline(out)
    out["wall_s"] = time.perf_counter() - started
    print(out["headline"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("paired-quick.json" if quick else "paired.json")
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path}; wall time {out['wall_s']:.0f} s")
    return 0
