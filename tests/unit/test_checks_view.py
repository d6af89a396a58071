"""`lossgate get <name>` shows one row per check (the render is pure; tests/cli covers the command)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from lossgate.cli.view import detail
from lossgate.model.status import CheckStatus, ModelRolloutStatus, Phase


def test_detail_shows_each_check_with_its_numbers() -> None:
    # Given a status with a regressed guardrail and an unjudged class
    checks = [
        CheckStatus(name="p95-slow", kind="latency", verdict="Regression", n_baseline=12000, n_canary=3000,
                    mean_baseline=0.05, mean_canary=0.11, delta=0.06, cs_low=0.041, cs_high=0.079,
                    margin=0.01, p_regression=2e-5, p_not_worse=1.0, alpha=0.00125,
                    reason="p95-slow: canary worse"),
        CheckStatus(name="rare", kind="classLoss", verdict="InsufficientData", judged=False, n_canary=12,
                    reason="class rare: 12/1000 canary samples; not judged"),
    ]  # fmt: skip
    status = ModelRolloutStatus(phase=Phase.ROLLED_BACK, checks=checks)
    obj = {
        "metadata": {"namespace": "ml", "name": "m"},
        "spec": {"model": "m", "steps": [{"weight": 10}, {"weight": 100}]},
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    # When the detail view is rendered
    console = Console(width=200, record=True)
    console.print(detail(obj, datetime(2026, 1, 1, tzinfo=UTC)))
    out = console.export_text()
    # Then each check's row carries n, delta, interval, p-values, alpha and verdict
    row = next(line for line in out.splitlines() if line.startswith("p95-slow"))
    for text in (
        "latency",
        "12,000/3,000",
        "+0.0600",
        "[+0.0410, +0.0790]",
        "<1e-4",
        "0.00125",
        "Regression",
    ):
        assert text in row, (text, row)
    rare = next(line for line in out.splitlines() if line.startswith("rare"))
    assert "(unjudged)" in rare


def test_request_metrics_count_codes_and_time_requests() -> None:
    from prometheus_client import CollectorRegistry

    from lossgate.instrument import RequestMetrics

    # Given request metrics on a fresh registry
    registry = CollectorRegistry()
    m = RequestMetrics(registry)
    labels = {"model": "m", "version": "v2"}
    # When one request succeeds, one fails with an exception and one sets its own 503 before failing
    with m.timed(**labels):
        pass
    for code in ("200", "503"):
        try:
            with m.timed(**labels) as call:
                call.code = code
                raise RuntimeError("boom")
        except RuntimeError:
            pass

    # Then the counters carry the codes the guardrail reads, and the histogram counts every request
    def value(name: str, **extra: str) -> float:
        got = registry.get_sample_value(name, labels | extra)
        return 0.0 if got is None else got

    assert value("http_requests_total", code="200") == 1
    assert value("http_requests_total", code="500") == 1
    assert value("http_requests_total", code="503") == 1
    assert value("http_request_duration_seconds_count") == 3
    assert value("http_request_duration_seconds_bucket", le="0.05") == 3


def test_the_loss_per_token_shows_perplexities() -> None:
    # Given a status with the token-loss check: 2.3026 and 2.3226 nats per token
    check = CheckStatus(
        name="tokenLoss", kind="tokenLoss", verdict="Undecided", n_baseline=900, n_canary=300,
        mean_baseline=2.302585, mean_canary=2.322585, delta=0.02, cs_low=-0.1, cs_high=0.2, margin=0.01,
    )  # fmt: skip
    obj = {
        "metadata": {"namespace": "ml", "name": "m"},
        "spec": {"model": "m", "steps": [{"weight": 10}, {"weight": 100}]},
        "status": ModelRolloutStatus(phase=Phase.PROGRESSING, checks=[check]).model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
    }
    # When the detail view is rendered
    console = Console(width=240, record=True)
    console.print(detail(obj, datetime(2026, 1, 1, tzinfo=UTC)))
    row = next(line for line in console.export_text().splitlines() if line.startswith("tokenLoss"))
    # Then each arm's mean NLL per token comes with its perplexity, exp of it
    assert "(ppl 10)" in row
    assert "(ppl 10.2)" in row
