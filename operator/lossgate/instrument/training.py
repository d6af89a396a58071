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

import numpy as np
from prometheus_client import CollectorRegistry, push_to_gateway, start_http_server
from prometheus_client.exposition import delete_from_gateway
from prometheus_client.metrics_core import Metric

from lossgate.instrument.step_stats import GateSettings, StepCounts, StepStats
from lossgate.instrument.training_families import count_families

# on_step folds its steps into the gauges and statistics every FOLD_STEPS steps, and every scrape or
# push folds what is pending first: a batch amortises the cold-cache cost of the fold.
FOLD_STEPS = 512

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
        self._pending: list[tuple[float, float, float, float, bool, bool]] = []  # update_batch rows
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
        # Only an append per step: everything else happens once per batch, in _fold.
        row = (float(step), float(loss), float(grad_norm),
               math.nan if loss_scale is None else float(loss_scale), nonfinite, skipped)  # fmt: skip
        with self._lock:
            self._pending.append(row)
            if len(self._pending) >= FOLD_STEPS:
                self._fold()
        if self._gateway is not None:
            self._maybe_push()
        return nonfinite or skipped or not (math.isfinite(row[1]) and math.isfinite(row[2]))

    def _fold(self) -> None:
        """Feed the pending steps to the gauges and the statistics (under the lock), as one batch:
        inside a training loop this code and its data are cold in the CPU caches, so a few numpy calls
        per batch cost far less than Python per step. A scrape or push folds first, so what is exported
        always includes every step recorded."""
        pending, self._pending = self._pending, []
        rows = np.array(pending, dtype=np.float64)  # step, loss, grad_norm, scale, nonfinite, skipped
        finite = np.isfinite(rows[:, 1]) & np.isfinite(rows[:, 2])
        rows[:, 4] = (rows[:, 4] != 0) | (rows[:, 5] != 0) | ~finite  # now: bad
        s = self._s
        s.step, s.loss, s.grad_norm = pending[-1][:3]
        scales = rows[:, 3][~np.isnan(rows[:, 3])]
        if len(scales):
            s.loss_scale = float(scales[-1])
        s.nonfinite += int(np.count_nonzero(rows[:, 4]))
        s.steps += len(rows)
        self.stats.update_batch(rows)

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
                self._fold()
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
