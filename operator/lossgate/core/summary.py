"""Human lines and status blocks built from the evidence (pure formatting, used by decide())."""

from __future__ import annotations

from datetime import datetime, timedelta

from lossgate.core.observation import HealthEvidence, LossEvidence
from lossgate.core.paired_step import PairedEvidence
from lossgate.model.durations import format_duration
from lossgate.model.status import AnalysisStatus, ArmStatus, PairedStatus, TrainingHealthStatus


def num(x: float | None) -> str:
    """0.412 style: three decimals, or two significant digits for tiny values."""
    if x is None:
        return "n/a"
    if x == 0 or abs(x) >= 0.001:
        return f"{x:.3f}"
    return f"{x:.2g}"


def signed(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "+" + num(x) if x >= 0 else num(x)


def count(x: float) -> str:
    return str(round(x))


def dur(td: timedelta) -> str:
    """Durations in messages: whole seconds."""
    return format_duration(timedelta(seconds=max(0, int(td.total_seconds()))))


def sig(x: float | None, digits: int = 6) -> float | None:
    """Round to significant digits for status (readable columns, stable diffs)."""
    return None if x is None else float(f"{x:.{digits}g}")


def loss_line(loss: LossEvidence | None, samples: float, target: float | None) -> str:
    """'canary loss 0.412 vs 0.409 (+0.003, 95% CS [-0.004, 0.010]), 6120/8000 samples'."""
    tail = f"{count(samples)}/{count(target)} samples" if target is not None else f"{count(samples)} samples"
    if loss is None:
        return f"no loss evidence yet, {tail}"
    if loss.mean_canary is None or loss.mean_baseline is None:
        return f"too few labelled predictions to compare (canary {count(loss.n_canary)}, baseline " \
            f"{count(loss.n_baseline)}), {tail}"  # fmt: skip
    level = f"{round(loss.cs_level * 100):d}% " if loss.cs_level is not None else ""
    bounds = f", {level}CS [{num(loss.cs_low)}, {num(loss.cs_high)}]" if loss.cs_low is not None else ""
    means = f"canary loss {num(loss.mean_canary)} vs {num(loss.mean_baseline)}"
    return f"{means} ({signed(loss.delta)}{bounds}), {tail}"


def samples_target(min_samples: int, samples: float, loss: LossEvidence | None) -> float:
    """What "x/y samples" shows: the step quota, or more when the judge expects to need more."""
    target = float(min_samples)
    if loss is not None and loss.samples_needed is not None and loss.samples_needed > 0:
        target = max(target, samples + loss.samples_needed)
    return target


def regression_detail(loss: LossEvidence | None) -> str:
    if loss is None:
        return ""
    parts = []
    if loss.margin is not None:
        parts.append(f"margin {num(loss.margin)}")
    if loss.p_regression is not None:
        parts.append(f"p={loss.p_regression:.2g}")
    if loss.catastrophic:
        parts.append("catastrophic-loss rate")
    return ", ".join(parts)


def health_line(h: HealthEvidence | None) -> str:
    if h is None:
        return "training metrics not read"
    if h.reasons:
        return "; ".join(h.reasons)
    return f"training health {h.verdict.value}"


def analysis_status(loss: LossEvidence, samples: float, policy: str | None, now: datetime) -> AnalysisStatus:
    return AnalysisStatus(
        verdict=loss.verdict.value,
        baseline=ArmStatus(n=sig(loss.n_baseline) or 0.0, mean=sig(loss.mean_baseline)),
        canary=ArmStatus(n=sig(loss.n_canary) or 0.0, mean=sig(loss.mean_canary)),
        delta=sig(loss.delta),
        cs_low=sig(loss.cs_low),
        cs_high=sig(loss.cs_high),
        cs_level=loss.cs_level,
        margin=sig(loss.margin),
        p_regression=sig(loss.p_regression),
        p_not_worse=sig(loss.p_not_worse),
        samples_needed=loss.samples_needed,
        samples_in_step=float(round(samples, 3)),
        catastrophic=loss.catastrophic,
        promotion_policy=policy,
        reason=loss.reason,
        updated_at=now,
    )


def training_status(h: HealthEvidence, now: datetime) -> TrainingHealthStatus:
    return TrainingHealthStatus(
        verdict=h.verdict.value,
        reasons=list(h.reasons[:20]),
        non_finite_steps=h.nonfinite_steps,
        grad_norm_spikes=h.grad_norm_spikes,
        max_grad_norm_z=sig(h.max_grad_norm_z),
        rank_divergence=sig(h.rank_divergence),
        loss_scale_collapse=h.loss_scale_collapse,
        validation_delta=sig(h.validation_delta),
        run=h.run,
        last_step=h.last_step,
        finished=h.finished,
        updated_at=h.assessed_at or now,
    )


def paired_status(p: PairedEvidence, mirror_percent: int, now: datetime) -> PairedStatus:
    """status.paired: the shadow step's paired test (kept as it was last seen once the step is left)."""
    return PairedStatus(
        verdict=p.verdict.value,
        n=p.n,
        mean_baseline=sig(p.mean_baseline),
        delta=sig(p.delta),
        cs_low=sig(p.cs_low),
        cs_high=sig(p.cs_high),
        margin=sig(p.margin),
        p_regression=sig(p.p_regression),
        p_not_worse=sig(p.p_not_worse),
        alpha=sig(p.alpha),
        mirror_percent=mirror_percent or None,
        updated_at=now,
    )
