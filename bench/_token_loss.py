"""Token-level scenarios of the detection benchmark (docs/judge.md, "Language models").

Requests of a language model's reference continuations, simulated per request: T tokens (1 + a
negative binomial, mean about 60, capped at MAX_TOKENS), a request difficulty u ~ Gamma(4, 1/4) (mean
1), and the summed token NLL S | T, u ~ Gamma(T k, u r / k) (k = 0.5: tokens as spread as real token
NLLs), clipped at 13.8 nats a token; so E[S] / E[T] = r exactly (nats per token). Counters per
interval and arm are what the recorder and the joiner export (n, sum S, sum T, sum S^2, sum T^2,
sum S T), and the judge is `token_path`, the code the operator runs.

Plan: the benchmark's ramp (5/10/25/50% of the labelled requests to the canary, 50 looks a step,
200 looks), at a low and a high count of labelled requests per interval. Baseline 2.3 nats per token
(perplexity 10); margin 0.02 nats per token (perplexity ratio 1.0202). Scenarios: canary on the
margin (the hardest null), equal, +2, +5 and +10 margins (+0.04, +0.1, +0.2 nats per token:
perplexity x1.04, x1.11, x1.22).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.judge import JudgeConfig, judge_path, used_intervals
from lossgate.core.stratified import ArmArrays
from lossgate.core.token_loss import TokenNull, token_path

FloatArray = NDArray[np.float64]

MAX_TOKENS = 512
MEAN_TOKENS = 60.0
TOKEN_SHAPE = 0.5
BASE_NLL = 2.3
MARGIN = 0.02
ALPHA = 0.01
STEPS = (5, 10, 25, 50)
REQUEST_CONFIG = JudgeConfig(
    margin=MARGIN, alpha_rollback=ALPHA, min_samples_before_rollback=0, min_samples_before_promote=0
)


def draw_counters(rng: np.random.Generator, n: NDArray[np.int64], r: float) -> FloatArray:
    """Counters (..., 8, K) of Poisson-many requests per cell at loss per token r: the six token
    counters, then the sum and sum of squares of the per-request NLL per token S / T (what the
    joiner exports as the request's loss, for the per-request judge)."""
    flat = n.reshape(-1)
    total = int(flat.sum())
    # T = 1 + NegBin(2, p): mean 1 + 2 (1 - p) / p = MEAN_TOKENS.
    p = 2.0 / (MEAN_TOKENS + 1.0)
    t = np.minimum(1.0 + rng.negative_binomial(2, p, size=total), MAX_TOKENS)
    u = rng.gamma(4.0, 0.25, size=total)
    s = np.minimum(rng.gamma(t * TOKEN_SHAPE, u * r / TOKEN_SHAPE), MAX_LOSS_NATS * t)
    cell = np.repeat(np.arange(flat.size), flat)
    per = s / t
    out = np.zeros((8, flat.size))
    for i, x in enumerate((np.ones(total), s, t, s * s, t * t, s * t, per, per * per)):
        out[i] = np.bincount(cell, weights=x, minlength=flat.size)
    return np.moveaxis(out.reshape((8, *n.shape)), 0, -2)


def simulate(
    rng: np.random.Generator, reps: int, labelled: float, r_canary: float, looks_per_step: int = 50
) -> dict[str, Any]:
    """Rollouts on the ramp; the share rolled back, and labels and tokens of the canary by then."""
    shares = np.repeat(np.asarray(STEPS, dtype=np.float64) / 100.0, looks_per_step)
    weights: list[float | None] = [float(w) for w in np.repeat(STEPS, looks_per_step)]
    used = used_intervals(weights, True)
    null = TokenNull(MARGIN, max_tokens=MAX_TOKENS)
    n_c = rng.poisson(labelled * shares, size=(reps, shares.size))
    n_b = rng.poisson(labelled * (1 - shares), size=(reps, shares.size))
    base = draw_counters(rng, n_b, BASE_NLL)
    canary = draw_counters(rng, n_c, r_canary)
    used_all = np.broadcast_to(used, n_c.shape)
    path = token_path(base[..., :6, :], canary[..., :6, :], used_all, null)
    # Reference: the loss judge on each request's NLL per token (a mean of ratios, the same r here
    # because difficulty does not depend on length), with its tail guard and quotas off.
    per_request = judge_path(
        ArmArrays(base[..., 0, :], base[..., 6, :], base[..., 7, :]),
        ArmArrays(canary[..., 0, :], canary[..., 6, :], canary[..., 7, :]),
        np.zeros(n_c.shape), np.zeros(n_c.shape), used_all, REQUEST_CONFIG,
    )  # fmt: skip
    ref_hit = (per_request.log_p_regression <= math.log(ALPHA)).any(axis=-1)
    hit = path.log_p_regression <= math.log(ALPHA)
    rolled = hit.any(axis=-1)
    at = np.argmax(hit, axis=-1)
    idx = np.arange(reps)
    labels = path.arm_c[idx, 0, at][rolled]
    tokens = path.arm_c[idx, 2, at][rolled]
    k = int(rolled.sum())
    lo, hi = (
        (stats.beta.ppf(0.025, k, reps - k + 1) if k else 0.0),
        (stats.beta.ppf(0.975, k + 1, reps - k) if k < reps else 1.0),
    )
    return {
        "rolled_back": k / reps, "ci95": [float(lo), float(hi)], "reps": reps,
        "mean_look": float(at[rolled].mean() + 1) if k else None,
        "mean_canary_labels": float(labels.mean()) if k else None,
        "mean_canary_tokens": float(tokens.mean()) if k else None,
        "per_request_judge_rolled_back": float(ref_hit.mean()),
    }  # fmt: skip


SCENARIOS = {
    "on the margin (null)": BASE_NLL + MARGIN,
    "equal (null)": BASE_NLL,
    "+2 margins": BASE_NLL + 2 * MARGIN,
    "+5 margins": BASE_NLL + 5 * MARGIN,
    "+10 margins": BASE_NLL + 10 * MARGIN,
}


def main(reps: int, null_reps: int, seed: int, out: Path, quick: bool) -> int:
    """`out`: the results directory."""
    if quick:
        reps, null_reps = min(reps, 100), min(null_reps, 200)
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {
        "plan": {
            "steps_percent": STEPS, "looks_per_step": 50, "margin_nats_per_token": MARGIN,
            "baseline_nats_per_token": BASE_NLL, "perplexity_baseline": math.exp(BASE_NLL),
            "perplexity_ratio_margin": math.exp(MARGIN), "alpha_rollback": ALPHA,
            "max_tokens": MAX_TOKENS, "mean_tokens": MEAN_TOKENS, "warmup_requests": TokenNull(MARGIN).warmup,
        },
        "cells": {},
    }  # fmt: skip
    for labelled, share in ((100.0, 1.0), (1000.0, 0.25)):
        for name, r in SCENARIOS.items():
            t0 = time.monotonic()
            # Fewer rollouts at the high count (each is 200,000 requests): the intervals say how many.
            n = max(1, round((null_reps if "null" in name else reps) * share))
            # Chunks keep memory small at the high count.
            chunk = max(1, int(4_000_000 / (labelled * 200)))
            parts = [simulate(rng, min(chunk, n - i), labelled, r) for i in range(0, n, chunk)]
            cell = _merge(parts)
            cell["seconds"] = round(time.monotonic() - t0, 1)
            results["cells"][f"{labelled:.0f}/look, {name}"] = cell
            print(
                f"{labelled:6.0f}/look  {name:22s} rolled back {cell['rolled_back']:.4f} "
                f"[{cell['ci95'][0]:.4f}, {cell['ci95'][1]:.4f}] of {n}; "
                f"labels {cell['mean_canary_labels']}, "
                f"tokens {cell['mean_canary_tokens']}, look {cell['mean_look']}; per-request judge "
                f"{cell['per_request_judge_rolled_back']:.4f} ({cell['seconds']} s)",
                flush=True,
            )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "detection-token.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    reps = sum(p["reps"] for p in parts)
    k = round(sum(p["rolled_back"] * p["reps"] for p in parts))

    def mean(key: str) -> float | None:
        got = [(p[key], round(p["rolled_back"] * p["reps"])) for p in parts if p[key] is not None]
        w = sum(c for _, c in got)
        return round(sum(v * c for v, c in got) / w, 1) if w else None

    lo = stats.beta.ppf(0.025, k, reps - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, reps - k) if k < reps else 1.0
    return {
        "rolled_back": k / reps, "ci95": [float(lo), float(hi)], "reps": reps,
        "mean_look": mean("mean_look"), "mean_canary_labels": mean("mean_canary_labels"),
        "mean_canary_tokens": mean("mean_canary_tokens"),
        "per_request_judge_rolled_back": sum(p["per_request_judge_rolled_back"] * p["reps"] for p in parts)
        / reps,
    }  # fmt: skip
