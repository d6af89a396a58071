"""Spec -> the small references and configs the adapters and the core take (never the whole CR)."""

from __future__ import annotations

from dataclasses import replace

from lossgate.adapters.routers import GatewayRouteRef, IstioRouteRef, ReplicaRef, RouteRef
from lossgate.conventions import BRIER_MAX, le_label
from lossgate.core.bounded_diff import DiffNull
from lossgate.core.checks import ClassChecks, GuardrailCheck
from lossgate.core.family import split_alpha
from lossgate.core.guardrail import CheckConfig
from lossgate.core.health import HealthConfig
from lossgate.core.judge import JudgeConfig
from lossgate.core.token_fold import TokenConfig
from lossgate.core.token_loss import TokenNull
from lossgate.instrument.buckets import LOSS_BUCKETS
from lossgate.model import ModelRolloutSpec
from lossgate.model.calibration import BRIER_CHECK
from lossgate.model.guardrails import DEFAULT_REQUESTS_METRIC
from lossgate.ports import (
    CalibrationSeriesRef,
    CanaryPodsRef,
    GuardrailSeriesRef,
    LossSeriesRef,
    TokenSeriesRef,
)


class SpecProblem(ValueError):
    """A spec the schema accepted but the operator cannot act on (names the field and the fix)."""


def route_ref(namespace: str, spec: ModelRolloutSpec) -> RouteRef:
    tr = spec.traffic_routing
    if tr.gateway_api is not None:
        return GatewayRouteRef(
            namespace=namespace,
            name=tr.gateway_api.http_route,
            rule_index=tr.gateway_api.rule_index,
            baseline_service=spec.baseline.service,
            canary_service=spec.canary.service,
        )
    if tr.istio is not None:
        index = (
            tr.istio.route_index if tr.istio.route_name is None and tr.istio.route_index is not None else None
        )
        return IstioRouteRef(
            namespace=namespace,
            name=tr.istio.virtual_service,
            baseline_host=spec.baseline.service,
            canary_host=spec.canary.service,
            route_name=tr.istio.route_name,
            route_index=0 if tr.istio.route_name is None and index is None else index,
        )
    if spec.baseline.deployment is None or spec.canary.deployment is None:
        raise SpecProblem(
            "spec.baseline.deployment and spec.canary.deployment are required with trafficRouting.replicas: "
            "name the two Deployments behind the Service"
        )
    return ReplicaRef(
        namespace=namespace,
        baseline_deployment=spec.baseline.deployment,
        canary_deployment=spec.canary.deployment,
    )


def loss_ref(namespace: str, spec: ModelRolloutSpec) -> LossSeriesRef:
    loss = spec.analysis.loss
    q = loss.queries
    return LossSeriesRef(
        namespace=namespace,
        model=spec.model,
        baseline_version=spec.baseline.version,
        canary_version=spec.canary.version,
        metric=loss.effective_metric,
        tail_le=le_label(loss.catastrophic_threshold),
        count_template=q.count if q else None,
        sum_template=q.sum if q else None,
        sumsq_template=q.sum_squares if q else None,
        tail_template=q.tail if q else None,
    )


def judge_config(spec: ModelRolloutSpec) -> JudgeConfig:
    """The pooled judge's config: its alphaRollback is its share of the family's (core/family.py)."""
    loss = spec.analysis.loss
    return JudgeConfig(
        margin=loss.margin,
        relative_margin=loss.relative_margin,
        alpha_rollback=split_alpha(loss.alpha_rollback, spec.family_checks),
        alpha_promote=loss.alpha_promote,
        min_samples_before_rollback=float(loss.min_samples_before_rollback),
        min_samples_before_promote=float(loss.min_samples_before_promotion),
        catastrophic_alpha=loss.alpha_catastrophic,
        catastrophic_ratio=loss.catastrophic_ratio,
    )


def guardrail_checks(spec: ModelRolloutSpec) -> list[GuardrailCheck]:
    """Each guardrail's test, at its share of alphaRollback."""
    loss = spec.analysis.loss
    alpha = split_alpha(loss.alpha_rollback, spec.family_checks)
    out = []
    for g in spec.analysis.guardrails:
        null = (
            DiffNull.absolute(g.margin, g.bound)
            if g.margin is not None
            else DiffNull.relative_to_baseline(g.relative_margin or 0.0, g.bound)
        )
        config = CheckConfig(g.name, null, alpha_rollback=alpha, alpha_promote=loss.alpha_promote)
        out.append(GuardrailCheck("errorRate" if g.error_rate is not None else "latency", config))
    gate = calibration_gate(spec)
    return [*out, gate] if gate is not None else out


def calibration_gate(spec: ModelRolloutSpec) -> GuardrailCheck | None:
    """The Brier gate of spec.analysis.calibration: the guardrails' bounded test on the mean per-request
    Brier score (in [0, 2]), at its share of alphaRollback; None when not gated."""
    cal = spec.analysis.calibration
    if cal is None or cal.margin is None:
        return None
    loss = spec.analysis.loss
    null = DiffNull.absolute(cal.margin, BRIER_MAX)
    config = CheckConfig(
        BRIER_CHECK,
        null,
        alpha_rollback=split_alpha(loss.alpha_rollback, spec.family_checks),
        alpha_promote=loss.alpha_promote,
    )
    return GuardrailCheck("calibration", config)


def calibration_ref(namespace: str, spec: ModelRolloutSpec) -> CalibrationSeriesRef | None:
    """The reliability counters to read, when spec.analysis.calibration is set."""
    cal = spec.analysis.calibration
    if cal is None:
        return None
    return CalibrationSeriesRef(namespace, spec.model, spec.baseline.version, spec.canary.version, cal.metric)


def token_config(spec: ModelRolloutSpec) -> TokenConfig | None:
    """The loss-per-token check (spec.analysis.tokenLoss) at its share of alphaRollback, or None."""
    tl = spec.analysis.token_loss
    if tl is None:
        return None
    loss = spec.analysis.loss
    null = TokenNull(tl.margin, max_tokens=float(tl.max_tokens_per_request), warmup=float(tl.warmup_requests))
    return TokenConfig(
        null,
        alpha_rollback=split_alpha(loss.alpha_rollback, spec.family_checks),
        alpha_promote=loss.alpha_promote,
        min_requests_before_rollback=float(tl.min_requests_before_rollback),
        min_requests_before_promote=float(tl.min_requests_before_promotion),
    )


def token_ref(namespace: str, spec: ModelRolloutSpec) -> TokenSeriesRef | None:
    tl = spec.analysis.token_loss
    if tl is None:
        return None
    return TokenSeriesRef(namespace, spec.model, spec.baseline.version, spec.canary.version, tl.metric)


def class_checks(spec: ModelRolloutSpec) -> ClassChecks | None:
    """The per-class judge: the pooled judge's test with the class's margin, its slot's share of
    alphaRollback (and of the tail guard's alpha), and minSamplesPerClass as both quotas."""
    pc = spec.analysis.loss.per_class
    if not pc.enabled:
        return None
    base = judge_config(spec)
    margin, relative = base.margin, base.relative_margin
    if pc.margin is not None or pc.relative_margin is not None:
        margin, relative = pc.margin, pc.relative_margin
    config = replace(
        base,
        margin=margin,
        relative_margin=relative,
        min_samples_before_rollback=float(pc.min_samples_per_class),
        min_samples_before_promote=float(pc.min_samples_per_class),
        catastrophic_alpha=base.catastrophic_alpha / pc.max_classes,
    )
    return ClassChecks(config, pc.max_classes, float(pc.min_samples_per_class))


def guardrail_refs(namespace: str, spec: ModelRolloutSpec) -> list[GuardrailSeriesRef]:
    out = []
    versions = (spec.baseline.version, spec.canary.version)
    for g in spec.analysis.guardrails:
        if g.error_rate is not None:
            q = g.error_rate.queries
            metric = g.error_rate.metric or DEFAULT_REQUESTS_METRIC
            ref = GuardrailSeriesRef(g.name, namespace, spec.model, *versions, "errors", metric)
            out.append(replace(ref, bad_template=q.bad if q else None, total_template=q.total if q else None))
        elif g.latency is not None:
            lat = g.latency
            mode = "slower" if lat.threshold_seconds is not None else "mean"
            threshold = lat.threshold_seconds or 0.0
            out.append(
                GuardrailSeriesRef(g.name, namespace, spec.model, *versions, mode, lat.metric, threshold)
            )
    return out


def health_config(spec: ModelRolloutSpec) -> HealthConfig:
    g = spec.analysis.gradient_health
    window = max(2, g.window_steps)
    return HealthConfig(
        warmup_steps=float(g.warmup_steps),
        window=window,
        min_history=min(60, window),
        grad_norm_spike_z=g.grad_norm_spike_z,
        loss_spike_z=g.loss_spike_z,
        spikes_per_1000=g.max_spikes_per_1000_steps,
        warn_spikes_per_1000=g.max_spikes_per_1000_steps,
        max_consecutive_skips=g.max_consecutive_skipped_steps,
        loss_scale_drop=g.loss_scale_drop_factor,
        rank_divergence_z=g.rank_divergence_z,
        allow_nonfinite=g.allow_non_finite,
        max_grad_norm_spike=g.max_grad_norm_spike,
        max_rank_divergence=g.max_rank_divergence,
        validation_margin=g.validation_margin,
    )


def tail_bucket_note(spec: ModelRolloutSpec) -> str | None:
    """Why the catastrophic guard may read no tail series, or None (a warning: custom buckets are legal).

    The default tail query selects the bucket whose `le` is catastrophicThreshold; lossgate's
    exporter has that bucket only for its default bounds (or when the model server passes it in
    `buckets=`). Without it both arms' tail counts read 0 and the guard cannot fire.
    """
    loss = spec.analysis.loss
    if loss.queries is not None and loss.queries.tail is not None:
        return None
    threshold = loss.catastrophic_threshold
    if loss.queries is None and threshold in LOSS_BUCKETS:
        return None
    if loss.queries is not None:
        return (
            "spec.analysis.loss.queries has no tail query, so the catastrophic guard reads "
            f'{loss.effective_metric}_bucket{{le="{le_label(threshold)}"}}, which metrics of your own '
            "naming do not have; fix: add queries.tail (predictions with loss at or below "
            "catastrophicThreshold)"
        )
    return (
        f"spec.analysis.loss.catastrophicThreshold {threshold:g} is not a bucket of lossgate's loss "
        f"histogram (le {', '.join(le_label(b) for b in LOSS_BUCKETS)}), so the catastrophic guard sees "
        f"no tail unless the model servers export it; fix: pass it in LossRecorder(buckets=...), "
        "or give queries with a tail query, or use one of those bounds"
    )


def training_runs(spec: ModelRolloutSpec) -> tuple[str | None, str | None]:
    """(canary run, baseline run): the `run` labels whose validation losses the health gate compares."""
    return spec.canary.training_run, spec.baseline.training_run


def canary_pods_ref(namespace: str, spec: ModelRolloutSpec) -> CanaryPodsRef | None:
    """Whose pods report the version the canary serves; None without spec.canary.deployment (unknown)."""
    if spec.canary.deployment is None:
        return None
    return CanaryPodsRef(namespace, spec.canary.deployment, spec.canary.version)
