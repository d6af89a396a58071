"""The reliability diagram of both arms from status.calibration (matplotlib, Agg backend): per
confidence bin the fraction correct against the mean confidence, the diagonal of perfect calibration,
and the share of predictions per bin underneath."""

from __future__ import annotations

from lossgate.cli.kubeconn import CliError
from lossgate.model.calibration import ArmCalibrationStatus, CalibrationStatus


def draw_reliability(cal: CalibrationStatus, out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if cal.baseline.n <= 0 and cal.canary.n <= 0:
        raise CliError("nothing to plot: no labelled prediction counted in status.calibration yet")
    width = 1.0 / cal.bins
    centres = [(i + 0.5) * width for i in range(cal.bins)]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, arm, color, shift in (
        ("baseline", cal.baseline, "tab:gray", -0.2),
        ("canary", cal.canary, "tab:orange", 0.2),
    ):
        xs, ys = _points(arm)
        label = f"{name}: ECE {_f(arm.ece)}, MCE {_f(arm.mce)}, Brier {_f(arm.brier)} (n {arm.n:,.0f})"
        ax.plot(xs, ys, marker="o", color=color, label=label)
        total = arm.n or 1.0
        ax2.bar([c + shift * width for c in centres], [b.count / total for b in arm.bins] or [0.0] * cal.bins,
                width=0.4 * width, color=color, label=name)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction correct (accuracy)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_xlabel(f"top-class probability (confidence), {cal.bins} equal-width bins")
    ax2.set_ylabel("share of predictions")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _points(arm: ArmCalibrationStatus) -> tuple[list[float], list[float]]:
    rows = [(b.confidence, b.accuracy) for b in arm.bins if b.count > 0]
    return [c for c, _ in rows if c is not None], [a for c, a in rows if c is not None and a is not None]


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def reliability_path(out: str) -> str:
    """Where the diagram goes beside the loss plot: NAME.png -> NAME-reliability.png."""
    stem = out[:-4] if out.lower().endswith(".png") else out
    return f"{stem}-reliability.png"
