"""The three dashboards (docs/dashboards.md): executive, on-call and debug.

Every query reads series the operator, the model servers (or the label joiner) and the training
jobs export (docs/metrics.md); tests/dashboards runs each one against a real Prometheus.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from lossgate_dev.dashboards.common import (
    ROLLOUT_SERIES,
    Panel,
    big_number,
    board,
    datasource,
    merged_table,
    query_variable,
    series,
    target,
)

NS = 'namespace=~"$namespace"'
RO = 'namespace=~"$namespace", name=~"$rollout"'
ONE = 'namespace="$namespace", name="$rollout"'
OUTCOMES = "Promote|Rollback|Block"
PROMOTE_SECONDS = 'lossgate_rollout_duration_seconds_bucket{outcome="Promote"}'
TICK_SECONDS = "rate(lossgate_analysis_duration_seconds_bucket[$__rate_interval])"


def _namespace(multi: bool) -> dash.QueryVariable:
    return query_variable("namespace", "Namespace", f"label_values({ROLLOUT_SERIES}, namespace)", multi=multi)


def _rollout(multi: bool) -> dash.QueryVariable:
    sel = NS if multi else 'namespace="$namespace"'
    return query_variable("rollout", "Rollout", f"label_values({ROLLOUT_SERIES}{{{sel}}}, name)", multi=multi)


def executive() -> dash.Dashboard:
    decisions = f'lossgate_decisions_total{{{NS}, kind=~"{OUTCOMES}"}}'
    panels: list[tuple[Panel, int, int]] = [
        (big_number("Promotions", "Canaries promoted in the time range.", "short",
                    f'sum(increase(lossgate_decisions_total{{{NS}, kind="Promote"}}[$__range]))'), 6, 5),
        (big_number("Rollbacks", "Canaries taken back to 0% in the time range: regressions caught.", "short",
                    f'sum(increase(lossgate_decisions_total{{{NS}, kind="Rollback"}}[$__range]))'), 6, 5),
        (big_number("Median time to promote", "From the first step to 100%, over the time range.", "s",
                    f"histogram_quantile(0.5, sum by (le) (increase({PROMOTE_SECONDS}[$__range])))"), 6, 5),
        (big_number("Mean loss delta avoided", "Mean canary-minus-baseline loss (nats per request) at "
                    "the rollbacks of the time range: what users would have had.", "none",
                    "sum(increase(lossgate_rollback_delta_nats_sum[$__range])) / "
                    "sum(increase(lossgate_rollback_delta_nats_count[$__range]))"), 6, 5),
        (series("Outcomes per hour", "Promotions, rollbacks and blocked rollouts.", "short",
                target(f"sum by (kind) (increase({decisions}[1h]))", "{{kind}}")), 12, 8),
        (series("Rollouts by phase", "ModelRollouts in each phase.", "short",
                target(f"sum by (phase) (lossgate_rollouts{{{NS}}})", "{{phase}}")), 12, 8),
        (series("Time to promote (p50, p90)", "Start to promotion, over the last day.", "s",
                target(f"histogram_quantile(0.5, sum by (le) (increase({PROMOTE_SECONDS}[1d])))", "p50"),
                target(f"histogram_quantile(0.9, sum by (le) (increase({PROMOTE_SECONDS}[1d])))", "p90",
                       "B")),
         12, 8),
        (series("Rollbacks avoided, by loss delta", "Rollbacks of the last day by the judge's loss delta "
                "(nats per request, bucket upper bounds).", "short",
                target("sum by (le) (increase(lossgate_rollback_delta_nats_bucket[1d]))", "<= {{le}}")),
         12, 8),
    ]  # fmt: skip
    return board(
        "lossgate-executive",
        "lossgate / Executive",
        "Rollout outcomes, time to promote, and the regressions rollbacks kept from users.",
        [datasource(), _namespace(multi=True)],
        panels,
    )


def oncall() -> dash.Dashboard:
    instant = [
        target(f"lossgate_rollout_phase{{{RO}}} == 1", ref="A", instant=True),
        target(f"lossgate_canary_weight_percent{{{RO}}}", ref="B", instant=True),
        target(f"lossgate_step_index{{{RO}}} + 1", ref="C", instant=True),
        target(f"lossgate_judge_delta_nats{{{RO}}}", ref="D", instant=True),
        target(f'lossgate_judge_cs_nats{{{RO}, bound="low"}}', ref="E", instant=True),
        target(f'lossgate_judge_cs_nats{{{RO}, bound="high"}}', ref="F", instant=True),
        target(f"lossgate_judge_margin_nats{{{RO}}}", ref="G", instant=True),
        target(f"time() - lossgate_last_analysis_timestamp_seconds{{{RO}}}", ref="H", instant=True),
    ]
    panels: list[tuple[Panel, int, int]] = [
        (merged_table("Active rollouts", "Phase, weight, step, the judge's delta and confidence sequence "
                      "against the margin (nats), and seconds since the last analysis.", *instant), 24, 8),
        (series("Delta and CS against the margin", "Canary minus baseline mean loss (nats); a rollback "
                "comes when the CS's low bound passes 0 with enough samples, a promotion when its high "
                "bound is below the margin.", "none",
                target(f"lossgate_judge_delta_nats{{{RO}}}", "{{name}} delta"),
                target(f"lossgate_judge_cs_nats{{{RO}}}", "{{name}} CS {{bound}}", "B"),
                target(f"lossgate_judge_margin_nats{{{RO}}}", "{{name}} margin", "C")), 12, 8),
        (series("Canary weight", "The weight lossgate wants in force.", "percent",
                target(f"lossgate_canary_weight_percent{{{RO}}}", "{{namespace}}/{{name}}")), 12, 8),
        (series("Metrics unavailable for", "Seconds since the loss metrics became unavailable "
                "(absent while available); past onMetricsUnavailable.after the rollout rolls back.", "s",
                target(f"time() - lossgate_metrics_unavailable_since_timestamp_seconds{{{RO}}}",
                       "{{namespace}}/{{name}}")), 8, 8),
        (series("Prometheus query errors", "Failed reads per second, by kind.", "reqps",
                target(f"sum by (name, kind) (rate(lossgate_prometheus_query_errors_total{{{RO}}}"
                       "[$__rate_interval]))", "{{name}} {{kind}}")), 8, 8),
        (series("Analysis lag", "Seconds since each rollout's last completed tick, against its "
                "interval: a lag far above the interval means the operator is not analysing.", "s",
                target(f"time() - lossgate_last_analysis_timestamp_seconds{{{RO}}}", "{{name}} lag"),
                target(f"lossgate_analysis_interval_seconds{{{RO}}}", "{{name}} interval", "B")), 8, 8),
        (series("Operator: tick duration", "Wall time of one analysis tick.", "s",
                target(f"histogram_quantile(0.99, sum by (le) ({TICK_SECONDS}))", "p99"),
                target(f"histogram_quantile(0.5, sum by (le) ({TICK_SECONDS}))", "p50", "B")), 8, 8),
        (series("Operator: ticks", "Ticks running and waiting for a slot, and failed ticks per second.",
                "short",
                target("sum by (state) (lossgate_ticks)", "{{state}}"),
                # 0 rather than no data: a healthy operator has no failure series at all.
                target("sum(rate(lossgate_tick_failures_total[$__rate_interval])) or vector(0)",
                       "failed/s", "B")), 8, 8),
        (series("Operator: status writes and notifications", "Status PATCHes per second, and "
                "notification deliveries by outcome.", "reqps",
                target("sum by (outcome) (rate(lossgate_status_writes_total[$__rate_interval]))",
                       "status {{outcome}}"),
                target("sum by (outcome) (rate(lossgate_notifications_total[$__rate_interval])) "
                       "or vector(0)", "notify {{outcome}}", "B")), 8, 8),
    ]  # fmt: skip
    return board(
        "lossgate-oncall",
        "lossgate / On-call",
        "The rollouts in progress and the operator's health.",
        [datasource(), _namespace(multi=True), _rollout(multi=True)],
        panels,
    )


def debug() -> dash.Dashboard:
    m = 'model="$model"'
    rate = "[$__rate_interval]"
    panels: list[tuple[Panel, int, int]] = [
        (series("Mean loss per interval, per version", "Mean per-request cross-entropy (nats) of the "
                "labelled predictions of each interval, per served version (baseline and canary).", "none",
                target(f"sum by (version) (increase(model_prediction_loss_sum{{{m}}}[$__interval])) / "
                       f"sum by (version) (increase(model_prediction_loss_count{{{m}}}[$__interval]))",
                       "{{version}}")), 12, 8),
        (series("Labelled samples per interval", "Labelled predictions per interval and version.", "short",
                target(f"sum by (version) (increase(model_prediction_loss_count{{{m}}}[$__interval]))",
                       "{{version}}")), 12, 8),
        (series("Judge: delta, CS and margin", "The judge's numbers at each look (nats).", "none",
                target(f"lossgate_judge_delta_nats{{{ONE}}}", "delta"),
                target(f"lossgate_judge_cs_nats{{{ONE}}}", "CS {{bound}}", "B"),
                target(f"lossgate_judge_margin_nats{{{ONE}}}", "margin", "C")), 12, 8),
        (series("Judge: samples per arm, and still needed", "Labelled predictions the judge used.", "short",
                target(f"lossgate_judge_samples{{{ONE}}}", "{{arm}}"),
                target(f"lossgate_judge_samples_needed{{{ONE}}}", "needed", "B")), 12, 8),
        (series("Label coverage", "Labelled over served predictions, per version (label joiner).",
                "percentunit",
                target(f"sum by (version) (rate(model_prediction_loss_count{{{m}}}{rate})) / "
                       f"sum by (version) (rate(model_predictions_total{{{m}}}{rate}))",
                       "{{version}}")), 8, 8),
        (series("Label delay (p50, p90)", "Label time minus serving time (label joiner).", "s",
                target("histogram_quantile(0.5, sum by (le, version) (rate("
                       f"model_prediction_label_delay_seconds_bucket{{{m}}}{rate})))", "p50 {{version}}"),
                target("histogram_quantile(0.9, sum by (le, version) (rate("
                       f"model_prediction_label_delay_seconds_bucket{{{m}}}{rate})))", "p90 {{version}}",
                       "B")), 8, 8),
        (series("Catastrophic tail", "Share of labelled predictions above 4.6 nats (p(true) < 0.01).",
                "percentunit",
                target("1 - sum by (version) (rate(model_prediction_loss_bucket"
                       f"{{{m}, le=\"4.6\"}}{rate})) / "
                       f"sum by (version) (rate(model_prediction_loss_count{{{m}}}{rate}))",
                       "{{version}}")),
         8, 8),
        (series("Training: gradient norm per rank", "Each rank's local gradient norm (run $run).", "none",
                target('training_grad_norm{run="$run"}', "rank {{rank}}")), 8, 8),
        (series("Training: loss per rank", "Training loss of each rank's latest step.", "none",
                target('training_loss{run="$run"}', "rank {{rank}}")), 8, 8),
        (series("Training: non-finite steps per rank", "Steps with NaN/Inf loss or gradients.", "short",
                target('increase(training_nonfinite_steps_total{run="$run"}[$__rate_interval])',
                       "rank {{rank}}")), 8, 8),
    ]  # fmt: skip
    model = query_variable(
        "model", "Model", f'label_values({ROLLOUT_SERIES}{{namespace="$namespace", name="$rollout"}}, model)',
        multi=False,
    )  # fmt: skip
    run = query_variable("run", "Training run", "label_values(training_step, run)", multi=False)
    return board(
        "lossgate-debug",
        "lossgate / Debug a rollout",
        "One rollout: loss per version and interval, labels, the judge's numbers, training health per rank.",
        [datasource(), _namespace(multi=False), _rollout(multi=False), model, run],
        panels,
    )


ALL = {"executive": executive, "oncall": oncall, "debug": debug}
