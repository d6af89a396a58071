"""The counted training metrics (docs/metrics.md, "Counted every step"): step_stats' cumulative
counts as Prometheus families. Labels run/rank on all; thresholds are labels (`z`, `limit`, `drop`)
or histogram bounds (`le`), so the operator reads the exact count for the CR's own threshold."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from lossgate.instrument.step_stats import BURST_BUCKETS, StepCounts, StepStats


def label(value: float) -> str:
    """A threshold as a label value, written like prometheus_client writes `le` (6.0, 10.0, 0.5)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _hist(
    name: str,
    doc: str,
    lab: dict[str, str],
    bounds: tuple[float, ...],
    counts: list[int],
    total: float,
    on: bool,
) -> Metric:
    m = Metric(name, doc, "histogram")
    if on:
        for b, n in zip(bounds, counts, strict=False):
            m.add_sample(f"{name}_bucket", lab | {"le": label(b)}, float(n))
        m.add_sample(f"{name}_bucket", lab | {"le": "+Inf"}, float(counts[-1]))
        m.add_sample(f"{name}_count", lab, float(counts[-1]))
        m.add_sample(f"{name}_sum", lab, total)
    return m


def _counter(name: str, doc: str, rows: list[tuple[dict[str, str], float]], on: bool) -> Metric:
    m = Metric(name, doc, "counter")
    if on:
        for lab, value in rows:
            m.add_sample(f"{name}_total", lab, value)
    return m


def count_families(  # noqa: C901 (one flat list of families, each guarded by `on`)
    c: StepCounts, stats: StepStats, lab: dict[str, str], on: bool
) -> Iterator[Metric]:
    s = stats.settings
    plain = [
        ("training_steps", "Optimizer steps recorded (every step).", c.steps),
        ("training_assessed_steps", "Post-warm-up steps with enough history to be judged.", c.assessed),
        ("training_skipped_steps", "Steps the optimizer skipped (AMP found inf/NaN gradients).", c.skipped),
        (
            "training_loss_scale_decreases",
            "Loss-scale decreases.",
            c.scale_decreases,
        ),
    ]
    for name, doc, value in plain:
        yield _counter(name, doc, [(lab, float(value))], on)
    yield _counter(
        "training_loss_scale_floor_steps",
        "Post-warm-up steps with the loss scale at or below its floor.",
        [(lab | {"floor": label(s.min_loss_scale)}, float(c.scale_floor_steps))],
        on,
    )
    yield _hist(
        "training_grad_norm_z",
        "Robust z of log gradient norm vs its trailing window, every step.",
        lab,
        stats.z_bounds,
        c.grad_z,
        c.grad_z_sum,
        on,
    )
    yield _hist(
        "training_loss_z",
        "Robust z of log loss vs its trailing window, every step.",
        lab,
        stats.z_bounds,
        c.loss_z,
        c.loss_z_sum,
        on,
    )
    yield _hist(
        "training_grad_norm_ratio",
        "Gradient norm / its trailing median, every step.",
        lab,
        stats.ratio_bounds,
        c.ratio,
        c.ratio_sum,
        on,
    )
    bursts = Metric(
        "training_spike_bursts", "At each spike event: the events in the trailing 1000 steps.", "histogram"
    )
    if on:
        for (metric, z), counts in c.bursts.items():
            key = lab | {"metric": metric, "z": label(z)}
            for b, n in zip(BURST_BUCKETS, counts, strict=False):
                bursts.add_sample("training_spike_bursts_bucket", key | {"le": label(b)}, float(n))
            bursts.add_sample("training_spike_bursts_bucket", key | {"le": "+Inf"}, float(counts[-1]))
            bursts.add_sample("training_spike_bursts_count", key, float(counts[-1]))
            bursts.add_sample("training_spike_bursts_sum", key, 0.0)
    yield bursts
    pair = [(lab | {"grad_z": label(g), "loss_z": label(lz)}, v) for (g, lz), v in c.unrecovered.items()]
    yield _counter(
        "training_spikes_unrecovered",
        "Spikes after which the loss stayed up.",
        [(k, float(v)) for k, v in pair],
        on,
    )
    pending = Metric("training_spikes_recovering", "Spikes not recovered from yet.", "gauge")
    if on:
        for (g, lz), v in c.pending.items():
            pending.add_sample(
                "training_spikes_recovering", lab | {"grad_z": label(g), "loss_z": label(lz)}, float(v)
            )
    yield pending
    yield _counter(
        "training_skip_runs",
        "Runs of consecutive skipped steps that reached `limit`.",
        [(lab | {"limit": str(k)}, float(v)) for k, v in c.skip_runs.items()],
        on,
    )
    yield _counter(
        "training_loss_scale_collapse_steps",
        "Steps with the scale `drop`x below its median.",
        [(lab | {"drop": label(k)}, float(v)) for k, v in c.scale_collapse.items()],
        on,
    )
    for metric, total, sq, n in (
        ("loss", c.log_loss_sum, c.log_loss_sq, c.log_loss_n),
        ("grad_norm", c.log_grad_sum, c.log_grad_sq, c.log_grad_n),
    ):
        name = f"training_log_{metric}"
        m = Metric(name, f"Post-warm-up log {metric} of finite steps (per-rank running mean).", "summary")
        sqm = Metric(f"{name}_squared_sum", f"Sum of squared post-warm-up log {metric}.", "counter")
        if on:
            m.add_sample(f"{name}_count", lab, float(n))
            m.add_sample(f"{name}_sum", lab, total)
            sqm.add_sample(f"{name}_squared_sum", lab, sq)
        yield m
        yield sqm
    wm = Metric("training_log_window_mean", "Mean log value over the last `window` steps.", "gauge")
    wn = Metric("training_log_window_count", "Finite steps in that mean.", "gauge")
    if on:
        for metric, (mean, n) in c.window_mean.items():
            if n:
                wm.add_sample("training_log_window_mean", lab | {"metric": metric}, mean)
            wn.add_sample("training_log_window_count", lab | {"metric": metric}, float(n))
    yield wm
    yield wn
    setting = Metric("training_gate_setting", "The exporter's counting settings (GateSettings).", "gauge")
    if on:
        for setting_name, setting_value in (
            ("window", float(s.window)),
            ("min_history", float(s.min_history)),
            ("warmup_steps", s.warmup_steps),
            ("recovery_steps", float(s.recovery_steps)),
        ):
            setting.add_sample("training_gate_setting", lab | {"name": setting_name}, setting_value)
    yield setting
