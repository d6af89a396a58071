"""The Brier gate (spec.analysis.calibration, docs/judge.md "Calibration"): `detection.py --brier`.

Predictions are the demo's real baseline model's (devtools/lossgate_dev/demo/models.py: logistic
regression on scikit-learn's bundled digits, nothing downloaded), on its 899 held-out requests. That
model is underconfident (ECE 0.12); tempered at T = 0.5 it is close to calibrated (ECE 0.011), and
that is the baseline here. Canaries are the same predictions at other temperatures (the same
accuracy, only the confidence changes: a calibration regression and nothing else):

- equal: the baseline itself;
- margin: on the null's boundary, each canary request drawn from the baseline's population or, with
  the probability that puts the mean Brier score exactly one margin above, from the underconfident
  one (T = 1);
- underconfident: T = 1 (the model as trained; +45% Brier);
- overconfident: T = 0.1 (five times as sharp as the baseline; +14% Brier).

Under tempering the accuracy does not move, and cross-entropy, whose per-request values are unbounded
on confident mistakes, rises faster than the Brier score: the loss judge column shows it (in the
margin scenario the loss is 8% worse, beyond its own 5% margin, so its rollbacks there are not false).

Each rollout is a 50/50 live split, PER_LOOK labelled requests a look drawn with replacement from the
population, LOOKS looks. The Brier gate runs through `diff_path` (the code its fold runs) with bound
2 and an absolute margin of 5% of the baseline's mean Brier score; beside it, on the same requests,
the pooled loss judge (`judge_path`, relative margin 5%, its tail guard off as in the paired
benchmark). Both at alpha_rollback / 2 = 0.005, their Bonferroni shares of a rollout with the gate.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from lossgate.conventions import BRIER_MAX, CALIBRATION_BINS, MAX_LOSS_NATS, PROB_FLOOR
from lossgate.core.bounded_diff import DiffNull, diff_path
from lossgate.core.calibration import Bins, ece, mce
from lossgate.core.judge import JudgeConfig, judge_path
from lossgate.core.stratified import ArmArrays

ALPHA = 0.01 / 2  # alpha_rollback 0.01 split between the pooled loss judge and the gate
RELATIVE_MARGIN = 0.05
PER_LOOK = 500
LOOKS = 240
BASE_T, UNDER_T, OVER_T = 0.5, 1.0, 0.1


def population() -> tuple[np.ndarray, np.ndarray]:
    """The baseline model's log-probabilities on the held-out requests, and their labels."""
    from lossgate_dev.demo.models import traffic, train

    t = traffic()
    p = train("baseline").predict_proba(t.features)
    return np.log(np.clip(p, 1e-300, 1.0)), np.asarray(t.labels, dtype=np.int64)


def tempered(lp: np.ndarray, temperature: float) -> np.ndarray:
    z = lp / temperature
    z -= z.max(1, keepdims=True)
    q = np.exp(z)
    out: np.ndarray = q / q.sum(1, keepdims=True)
    return out


def per_request(q: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Per request: cross-entropy (clipped as the exporter clips), Brier score; and the population's
    calibration summary."""
    n = len(y)
    py = q[np.arange(n), y]
    ce = np.minimum(-np.log(np.maximum(py, PROB_FLOOR)), MAX_LOSS_NATS)
    brier = np.clip((q**2).sum(1) - 2 * py + 1, 0.0, BRIER_MAX)
    conf, correct = q.max(1), (q.argmax(1) == y).astype(float)
    b = np.minimum((conf * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins = Bins(*(tuple(np.bincount(b, w, CALIBRATION_BINS)) for w in (None, conf, correct, brier)))
    return {
        "ce": ce,
        "brier": brier,
        "summary": {
            "mean_loss": float(ce.mean()), "mean_brier": float(brier.mean()), "ece": ece(bins),
            "mce": mce(bins), "accuracy": float(correct.mean()), "confidence": float(conf.mean()),
        },
    }  # fmt: skip


def simulate(
    base: dict[str, Any], canary: list[tuple[dict[str, Any], float]], reps: int, seed: int, margin: float
) -> dict[str, Any]:
    """`reps` rollouts; `canary`: (population, probability) mixture each canary request comes from."""
    rng = np.random.default_rng(seed)
    half = PER_LOOK // 2
    pop = len(base["ce"])
    shape = (reps, LOOKS)
    arms = {arm: {k: np.zeros(shape) for k in ("n", "brier", "ce", "ce2")} for arm in ("b", "c")}
    weights = np.cumsum([w for _, w in canary])
    for k in range(LOOKS):
        for arm in ("b", "c"):
            idx = rng.integers(0, pop, (reps, half))
            if arm == "b":
                brier, ce = base["brier"][idx], base["ce"][idx]
            else:
                which = np.searchsorted(weights, rng.random((reps, half)) * weights[-1], side="right")
                brier = np.choose(which, [src["brier"][idx] for src, _ in canary])
                ce = np.choose(which, [src["ce"][idx] for src, _ in canary])
            a = arms[arm]
            a["n"][:, k] = half
            a["brier"][:, k] = brier.sum(-1)
            a["ce"][:, k] = ce.sum(-1)
            a["ce2"][:, k] = (ce * ce).sum(-1)
    used = np.ones(LOOKS, dtype=np.bool_)
    b, c = arms["b"], arms["c"]
    gate = diff_path(b["n"], b["brier"], c["n"], c["brier"], used, DiffNull.absolute(margin, BRIER_MAX))
    config = JudgeConfig(
        relative_margin=RELATIVE_MARGIN, alpha_rollback=ALPHA, min_samples_before_rollback=0,
        min_samples_before_promote=0,
    )  # fmt: skip
    zeros = np.zeros(shape)
    loss = judge_path(
        ArmArrays(b["n"], b["ce"], b["ce2"]), ArmArrays(c["n"], c["ce"], c["ce2"]), zeros, zeros, used, config
    )
    return {
        "brier_gate": _outcome(gate.log_p_regression <= math.log(ALPHA)),
        "loss_judge": _outcome(np.asarray(loss.regression)),
    }


def _oracle(base: dict[str, Any], canary: dict[str, Any], margin: float) -> dict[str, float]:
    """Labels (both arms, 50/50) a one-look z test that knew both variances would need for 50% and 80%
    power at the same alpha: what the population's information allows, for scale."""
    out = {}
    for key, m in (("brier", margin), ("ce", RELATIVE_MARGIN * float(base["ce"].mean()))):
        gap = float(canary[key].mean() - base[key].mean()) - m
        var = float(canary[key].var() + base[key].var())
        for power in (0.5, 0.8):
            n = (norm.ppf(1 - ALPHA) + norm.ppf(power)) ** 2 * var / gap**2
            out[f"{'brier_gate' if key == 'brier' else 'loss_judge'}_power_{power:g}"] = 2 * n
    return out


def _outcome(flags: np.ndarray) -> dict[str, Any]:
    hit = flags.any(-1)
    first = (flags.argmax(-1) + 1) * PER_LOOK
    k, n = int(hit.sum()), len(hit)
    return {
        "rate": k / n,
        "wilson95": _wilson(k, n),
        "mean_labels": float(first[hit].mean()) if k else None,
        "median_labels": float(np.median(first[hit])) if k else None,
    }


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(reps: int, null_reps: int, seed: int) -> dict[str, Any]:
    lp, y = population()
    variants = {
        name: per_request(tempered(lp, t), y)
        for name, t in (("baseline", BASE_T), ("underconfident", UNDER_T), ("overconfident", OVER_T))
    }
    base, under = variants["baseline"], variants["underconfident"]
    margin = RELATIVE_MARGIN * base["summary"]["mean_brier"]
    w = margin / (under["summary"]["mean_brier"] - base["summary"]["mean_brier"])
    scenarios: dict[str, tuple[list[tuple[dict[str, Any], float]], int]] = {
        "equal": ([(base, 1.0)], null_reps),
        "margin": ([(base, 1.0 - w), (under, w)], null_reps),
        "underconfident": ([(under, 1.0)], reps),
        "overconfident": ([(variants["overconfident"], 1.0)], reps),
    }
    results = {
        name: simulate(base, mix, n, seed + i, margin) for i, (name, (mix, n)) in enumerate(scenarios.items())
    }
    for name in ("underconfident", "overconfident"):
        results[name]["fixed_horizon_labels"] = _oracle(base, variants[name], margin)
    return {
        "population": {"requests": len(y)} | {k: v["summary"] for k, v in variants.items()},
        "temperatures": {"baseline": BASE_T, "underconfident": UNDER_T, "overconfident": OVER_T},
        "brier_margin": margin,
        "loss_relative_margin": RELATIVE_MARGIN,
        "margin_mixture_weight": w,
        "labels_per_look": PER_LOOK,
        "looks": LOOKS,
        "alpha_each": ALPHA,
        "scenarios": results,
    }


def headline(out: dict[str, Any]) -> str:
    pop = out["population"]
    lines = [
        f"demo digits baseline model, {pop['requests']} held-out requests, tempered; "
        f"{out['labels_per_look']} labels a look (50/50), {out['looks']} looks, "
        f"alpha {out['alpha_each']} each",
        f"{'variant':<16}{'T':>6}{'loss':>9}{'Brier':>9}{'ECE':>9}{'MCE':>9}{'acc':>8}",
    ]
    for name, t in out["temperatures"].items():
        s = pop[name]
        lines.append(
            f"{name:<16}{t:>6}{s['mean_loss']:>9.4f}{s['mean_brier']:>9.4f}{s['ece']:>9.4f}{s['mce']:>9.4f}"
            f"{s['accuracy']:>8.4f}"
        )
    lines.append(
        f"Brier margin {out['brier_margin']:.5f} (5% of the baseline's), loss margin 5% of the baseline's"
    )
    lines.append(f"{'scenario':<16}{'check':<12}{'rolled back':>13}{'95% CI':>18}{'mean labels':>13}")
    for name, res in out["scenarios"].items():
        for check in ("brier_gate", "loss_judge"):
            r = res[check]
            ci = f"[{r['wilson95'][0]:.4f}, {r['wilson95'][1]:.4f}]"
            labels = "-" if r["mean_labels"] is None else f"{r['mean_labels']:,.0f}"
            lines.append(f"{name:<16}{check:<12}{r['rate']:>13.4f}{ci:>18}{labels:>13}")
    for name in ("underconfident", "overconfident"):
        o = out["scenarios"][name]["fixed_horizon_labels"]
        lines.append(
            f"{name}: a one-look z test knowing the variances needs {o['brier_gate_power_0.5']:,.0f} / "
            f"{o['brier_gate_power_0.8']:,.0f} labels (Brier, 50% / 80% power), "
            f"{o['loss_judge_power_0.5']:,.0f} / {o['loss_judge_power_0.8']:,.0f} (loss)"
        )
    return "\n".join(lines)


def main(reps: int, null_reps: int, seed: int, out_dir: Path, quick: bool) -> int:
    """`detection.py --brier`: print the table and write detection-brier.json."""
    if quick:
        reps, null_reps = 200, 500
    started = time.perf_counter()
    out = run(reps, null_reps, seed)
    out["reps"], out["null_reps"] = reps, null_reps
    out["headline"] = headline(out)
    out["wall_s"] = time.perf_counter() - started
    print(out["headline"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("detection-brier-quick.json" if quick else "detection-brier.json")
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path}; wall time {out['wall_s']:.0f} s")
    return 0
