"""The training exporter: one per rank of a (distributed) training job, labelled run/rank.

    exporter = TrainingExporter(run="fraud-scorer-train-v42", rank=rank)
    exporter.serve(9100 + rank)                       # or push: exporter.push_to("http://pushgateway:9091")
    for step in ...:
        exporter.on_step(step, loss, grad_norm)       # loss_scale=... under fp16 mixed precision
    exporter.on_validation(val_loss)

A scrape (or push) always sees one consistent step: step, loss and gradient norm are read together.
Besides the latest-step gauges (for display), every step feeds lossgate.instrument.step_stats, whose
cumulative counts (counters and histograms, docs/metrics.md) let the operator's gate see every step.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, push_to_gateway, start_http_server
from prometheus_client.exposition import delete_from_gateway
from prometheus_client.metrics_core import Metric

from lossgate.instrument.step_stats import GateSettings, StepCounts, StepStats
from lossgate.instrument.training_families import count_families

# on_step folds its steps into the statistics every FOLD_STEPS steps or FOLD_S seconds (and at every
# scrape or push), whichever comes first.
FOLD_STEPS = 64
FOLD_S = 1.0

TRAINING_METRICS = (
    "training_loss",
    "training_grad_norm",
    "training_step",
    "training_nonfinite_steps_total",
    "training_loss_scale",
    "validation_loss",
    "training_steps_total",  # the counted form (step_stats): its presence tells the operator
)


@dataclass
class _State:
    step: float = math.nan
    loss: float = math.nan
    grad_norm: float = math.nan
    loss_scale: float | None = None
    nonfinite: int = 0
    steps: int = 0
    validation: float | None = None
    counts: StepCounts | None = None


class TrainingExporter:
    """Per-rank training metrics; detects non-finite loss/gradient norm itself.

    Exports (labels run, rank):
      training_loss, training_grad_norm, training_step     gauges, the latest step
      training_nonfinite_steps_total                       counter, steps with NaN/Inf loss or gradients
      training_loss_scale                                  gauge, only once a loss scale was given (fp16)
      validation_loss                                      gauge, the latest evaluation
    Non-finite values are exported as they are (NaN, +Inf), so the operator sees them too.
    """

    def __init__(
        self,
        run: str,
        rank: int | str,
        registry: CollectorRegistry | None = None,
        *,
        push_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        settings: GateSettings | None = None,
    ) -> None:
        self.run = str(run)
        self.rank = str(rank)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.push_interval_s = push_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._s = _State()
        self.stats = StepStats(settings)
        self._pending: list[tuple[float, float, float, float | None, bool, bool]] = []
        self._folded_at = clock()
        self._gateway: tuple[str, str, float] | None = None
        self._last_push = -math.inf
        self.registry.register(self)

    @property
    def labels(self) -> dict[str, str]:
        return {"run": self.run, "rank": self.rank}

    def on_step(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        loss_scale: float | None = None,
        nonfinite: bool = False,
        skipped: bool = False,
    ) -> bool:
        """Record one optimizer step; returns True when it was non-finite (NaN/Inf loss or gradients).

        Pass nonfinite=True when your framework already knows the gradients overflowed, and
        skipped=True when the optimizer step was not applied (an AMP GradScaler found inf/NaN): a
        skipped step counts as non-finite and as skipped, and only applied non-finite steps fail the
        gate. Pushes to the gateway when one is set and push_interval_s has passed.
        """
        step_f, loss_f, norm_f = float(step), float(loss), float(grad_norm)
        bad = nonfinite or skipped or not (math.isfinite(loss_f) and math.isfinite(norm_f))
        scale = None if loss_scale is None else float(loss_scale)
        now = self._clock()
        with self._lock:
            s = self._s
            s.step, s.loss, s.grad_norm = step_f, loss_f, norm_f
            if scale is not None:
                s.loss_scale = scale
            s.nonfinite += int(bad)
            s.steps += 1
            self._pending.append((step_f, loss_f, norm_f, scale, bad, skipped))
            if len(self._pending) >= FOLD_STEPS or now - self._folded_at >= FOLD_S:
                self._fold(now)
        self._maybe_push()
        return bad

    def _fold(self, now: float) -> None:
        """Feed the pending steps to the statistics (under the lock). Steps are folded in batches: run
        between two training steps, the statistics' code and data are cold in the CPU caches and one
        step costs several times what it costs in a batch. A scrape or push folds first, so what is
        exported always includes every step recorded."""
        pending, self._pending = self._pending, []
        update = self.stats.update
        for args in pending:
            update(*args)
        self._folded_at = now

    def on_validation(self, loss: float) -> None:
        with self._lock:
            self._s.validation = float(loss)
        self._maybe_push(force=True)

    # Serving and pushing ----------------------------------------------------------------------------
    def serve(self, port: int = 0, addr: str = "0.0.0.0") -> int:  # noqa: S104 (a pod's scrape port)
        """Serve /metrics for this rank in a daemon thread; returns the bound port."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_address[1])

    def push_to(self, gateway: str, job: str = "lossgate-training", timeout_s: float = 5.0) -> None:
        """Push to a Prometheus Pushgateway from now on (on_step pushes every push_interval_s seconds).

        The grouping key is {job, run, rank}, so ranks never overwrite each other. Scrape the gateway with
        `honor_labels: true`. Pushes once immediately so the gateway is reachable or this raises.
        """
        self._gateway = (gateway, job, timeout_s)
        self.push()

    def push(self) -> None:
        if self._gateway is None:
            raise RuntimeError("call push_to(gateway) first")
        gateway, job, timeout_s = self._gateway
        push_to_gateway(gateway, job=job, registry=self.registry, grouping_key=self.labels, timeout=timeout_s)
        self._last_push = self._clock()

    def delete_from_gateway(self) -> None:
        """Remove this rank's group from the gateway (the pushed values otherwise stay until deleted)."""
        if self._gateway is not None:
            gateway, job, timeout_s = self._gateway
            delete_from_gateway(gateway, job=job, grouping_key=self.labels, timeout=timeout_s)

    def close(self) -> None:
        """Final push, so the gateway holds the last step."""
        if self._gateway is not None:
            self.push()

    def _maybe_push(self, force: bool = False) -> None:
        if self._gateway is not None and (force or self._clock() - self._last_push >= self.push_interval_s):
            self.push()

    # prometheus_client collector protocol ---------------------------------------------------------
    def describe(self) -> list[Metric]:
        empty = _State(loss_scale=1.0, validation=0.0, counts=self.stats.counts)
        return list(self._families(empty, with_samples=False))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._pending:
                self._fold(self._clock())
            snap = _State(**vars(self._s))
            snap.counts = self.stats.counts  # a copy
        if snap.steps == 0 and snap.validation is None:
            return  # nothing observed yet: export nothing rather than NaN gauges
        yield from self._families(snap, with_samples=snap.steps > 0)

    def _families(self, s: _State, with_samples: bool) -> Iterator[Metric]:
        lab = self.labels
        gauges = [("training_loss", "Training loss of the latest step.", s.loss),
                  ("training_grad_norm", "Gradient norm (this rank's, before all-reduce) of the latest step.",
                   s.grad_norm),
                  ("training_step", "Latest optimizer step.", s.step)]  # fmt: skip
        for name, doc, value in gauges:
            m = Metric(name, doc, "gauge")
            if with_samples:
                m.add_sample(name, lab, value)
            yield m
        nf = Metric("training_nonfinite_steps", "Steps whose loss or gradients were NaN/Inf.", "counter")
        if with_samples:
            nf.add_sample("training_nonfinite_steps_total", lab, float(s.nonfinite))
        yield nf
        if s.loss_scale is not None:
            ls = Metric("training_loss_scale", "Mixed-precision loss scale.", "gauge")
            if with_samples:
                ls.add_sample("training_loss_scale", lab, s.loss_scale)
            yield ls
        if s.counts is not None:
            yield from count_families(s.counts, self.stats, lab, with_samples)
        if s.validation is not None:
            val = Metric("validation_loss", "Validation loss of the latest evaluation.", "gauge")
            val.add_sample("validation_loss", lab, s.validation)
            yield val
