"""The loss picture: delta (canary minus baseline mean loss) with its confidence sequence over time,
the margin, and the decision; labelled samples per arm underneath. matplotlib, Agg backend (no display).

`draw` serves `lossgate replay --plot`; `run_plot` is `lossgate plot NAME`: the judge's trail recomputed
from Prometheus over the rollout's weight timeline (status.stepStarts) when Prometheus answers, else the
points recorded in status.history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from lossgate.cli.kubeconn import CliError, Rollouts
from lossgate.cli.reliability_plot import draw_reliability, reliability_path
from lossgate.cli.trail import Look, first_decision, iso, trail
from lossgate.core.evidence import Problem
from lossgate.core.judge import MAX_LOSS_NATS
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus

NO_INFORMATION = MAX_LOSS_NATS * 0.999  # a CS this wide means "no interval judged yet": not drawn
SPARSE = 6  # fewer points than this (status.history): error bars instead of a band


def draw(
    looks: Sequence[Look],
    out: str,
    title: str,
    decision: Look | None,
    weights: Sequence[tuple[datetime, int]] = (),
    mark: tuple[bool, str] | None = None,
) -> None:
    """Write the PNG to `out`. `weights`: each step's start and canary weight (drawn as boundaries).
    `mark`: (rolled back?, the rule) for a decision the state machine took at `decision`'s look (a
    quota or a timeout) rather than the judge's verdict there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not looks:
        raise CliError("nothing to plot: no analysis interval in the window")
    t = [lk.time for lk in looks]
    known = [abs(lk.cs_low) < NO_INFORMATION and abs(lk.cs_high) < NO_INFORMATION for lk in looks]
    nan = float("nan")
    low = [lk.cs_low if ok else nan for lk, ok in zip(looks, known, strict=True)]
    high = [lk.cs_high if ok else nan for lk, ok in zip(looks, known, strict=True)]
    delta = [lk.delta if ok else nan for lk, ok in zip(looks, known, strict=True)]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
    if len(looks) >= SPARSE:
        ax.fill_between(t, low, high, alpha=0.25, color="tab:blue", label="confidence sequence")
    else:  # a few recorded decisions: one interval per point reads better than a band
        err = [
            [d - lo for d, lo in zip(delta, low, strict=True)],
            [hi - d for d, hi in zip(delta, high, strict=True)],
        ]
        ax.errorbar(t, delta, yerr=err, fmt="none", ecolor="tab:blue", alpha=0.5, capsize=6, elinewidth=6,
                    label="confidence sequence")  # fmt: skip
    ax.plot(t, delta, color="tab:blue", marker="o", markersize=3, label="delta (canary - baseline)")
    if len(looks) >= SPARSE:
        ax.plot(t, [lk.margin for lk in looks], color="tab:red", linestyle="--", label="margin")
    else:
        ax.axhline(looks[-1].margin, color="tab:red", linestyle="--", label="margin")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    lo, hi, clipped = y_limits(looks)
    ax.set_ylim(lo, hi)
    if clipped:
        ax.text(0.995, 0.98, f"y clipped: {clipped} early look(s) wider than shown", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="dimgray")  # fmt: skip
    for at, w in weights:  # step boundaries, labelled with the weight that starts there
        ax.axvline(at, color="tab:purple", linestyle=":", linewidth=1)
        ax.annotate(f"{w}%", (at, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3),
                    textcoords="offset points", color="tab:purple", fontsize=8)  # fmt: skip
    if decision is not None:
        regression, rule = (
            mark if mark is not None else (decision.verdict == LossVerdict.REGRESSION, decision.rule)
        )
        color, word = ("tab:red", "roll back") if regression else ("tab:green", "promote")
        ax.axvline(decision.time, color=color, linewidth=1.5)
        ax.plot([decision.time], [decision.delta], marker="X", markersize=12, color=color, linestyle="none",
                label=f"decision: {word} ({rule})")  # fmt: skip
        late = decision.look > 0.7 * len(looks)  # near the right edge: the label goes to the left
        ax.annotate(f"{word}: {rule}\nlook {decision.look}, {decision.n_canary:,.0f} canary samples",
                    (decision.time, min(max(decision.delta, lo), hi)), xytext=(-10 if late else 10, 10),
                    textcoords="offset points", color=color, fontsize=9,
                    ha="right" if late else "left",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})  # fmt: skip
    ax.set_ylabel("mean loss difference (nats)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax2.step(
        t,
        [lk.n_canary for lk in looks],
        where="post",
        color="tab:orange",
        label="canary samples",
        marker="o" if len(looks) < SPARSE else None,
    )
    ax2.step(
        t,
        [lk.n_baseline for lk in looks],
        where="post",
        color="tab:gray",
        label="baseline samples",
        marker="o" if len(looks) < SPARSE else None,
    )
    ax2.set_ylabel("labelled samples")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(alpha=0.3)
    if weights:
        wx = ax2.twinx()
        end = max(t[-1], weights[-1][0])
        wx.step([w[0] for w in weights] + [end], [w[1] for w in weights] + [weights[-1][1]], where="post",
                color="tab:purple", linestyle=":", label="canary weight %")  # fmt: skip
        wx.set_ylabel("canary weight %")
        wx.set_ylim(0, 105)
        wx.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def y_limits(looks: Sequence[Look], late_share: float = 0.25) -> tuple[float, float, int]:
    """A y-range that keeps the margin, zero and the later confidence sequence readable: the looks
    before the canary had `late_share` of its final samples are clipped when wider (the first looks'
    intervals are tens of times wider than the late ones and would squash them flat). Returns (low,
    high, how many looks are drawn past the range)."""
    known = [lk for lk in looks if abs(lk.cs_low) < NO_INFORMATION and abs(lk.cs_high) < NO_INFORMATION]
    final = max((lk.n_canary for lk in looks), default=0.0)
    late = [lk for lk in known if lk.n_canary >= late_share * final] or known
    values = [0.0] + [lk.margin for lk in looks]
    for lk in late:
        values += [lk.cs_low, lk.cs_high, lk.delta]
    lo, hi = min(values), max(values)
    pad = 0.12 * (hi - lo) if hi > lo else max(abs(hi), 1e-3)
    lo, hi = lo - pad, hi + pad
    clipped = sum(1 for lk in known if lk.cs_low < lo or lk.cs_high > hi)
    return lo, hi, clipped


def history_looks(status: ModelRolloutStatus) -> list[Look]:
    """The judge's numbers as recorded in status.history (one point per recorded decision)."""
    margin = status.analysis.margin if status.analysis and status.analysis.margin is not None else 0.0
    out = []
    for k, h in enumerate(status.history, 1):
        if h.delta is None or h.cs_low is None or h.cs_high is None:
            continue
        at = h.time.timestamp()
        out.append(Look(k, at, at, h.n_baseline or 0.0, h.n_canary or 0.0, h.delta, h.cs_low, h.cs_high,
                        1.0, 1.0, margin, h.verdict or "", 0))  # fmt: skip
    return out


def prometheus_looks(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, namespace: str, address: str, end: datetime
) -> list[Look] | str:
    """The judge's trail recomputed as the operator computes it; a reason string when it cannot be."""
    from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
    from lossgate.adapters.spec_refs import judge_config, loss_ref
    from lossgate.core.timeline import weight_timeline, with_weights

    if not status.step_starts:
        return "the rollout has not moved traffic yet (no status.stepStarts)"
    metrics = PrometheusMetrics(PrometheusConfig(address, timeout_s=5.0, retries=0))
    try:
        got = metrics.loss_intervals(
            loss_ref(namespace, spec), status.step_starts[0].at, end, spec.analysis.interval.total_seconds()
        )
    finally:
        metrics.close()
    if isinstance(got, Problem):
        return f"Prometheus at {address}: {got.kind}: {got.message}"
    return trail(with_weights(got, weight_timeline(status)), judge_config(spec))


def run_plot(
    rollouts: Rollouts, namespace: str, name: str, out_path: str, prometheus: str | None, out: TextIO
) -> int:
    obj = rollouts.get(namespace, name)
    try:
        spec = ModelRolloutSpec.model_validate(obj.get("spec") or {})
        status = ModelRolloutStatus.model_validate(
            {k: v for k, v in (obj.get("status") or {}).items() if k != "kopf"}
        )
    except ValueError as err:
        raise CliError(f"ModelRollout {namespace}/{name} cannot be read: {err}") from err
    end = datetime.now(UTC)
    if status.terminal and status.history:
        end = status.history[-1].time + spec.analysis.interval
    address = prometheus or spec.analysis.prometheus.address
    got = prometheus_looks(spec, status, namespace, address, end)
    if isinstance(got, str) or not got:
        note = got if isinstance(got, str) else "no interval closed yet"
        looks, source = history_looks(status), f"status.history ({note})"
    else:
        looks, source = got, f"Prometheus {address}, {len(got)} looks"
    if not looks:
        raise CliError(f"nothing to plot for ModelRollout {namespace}/{name}: {source}")
    decision = first_decision(looks)
    weights = [(s.at, s.weight) for s in status.step_starts]
    if status.terminal and status.history:
        weights.append((status.history[-1].time, status.canary_weight))
    title = (f"{namespace}/{name}: {spec.model} canary {spec.canary.version} vs {spec.baseline.version} "
             f"({status.phase.value})")  # fmt: skip
    draw(looks, out_path, title=title, decision=decision, weights=weights)
    when = f", first decision {decision.verdict} at {iso(decision.time)}" if decision else ""
    out.write(f"plot written to {out_path} (from {source}{when})\n")
    cal = status.calibration
    if cal is not None and (cal.baseline.n > 0 or cal.canary.n > 0):
        path = reliability_path(out_path)
        draw_reliability(cal, path, title=f"{namespace}/{name}: reliability of both arms")
        out.write(f"reliability diagram written to {path} (status.calibration)\n")
    return 0
