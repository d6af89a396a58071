"""The loss recorder a model server embeds: delayed-label join and per-request cross-entropy metrics.

    recorder = LossRecorder()                      # registers on prometheus_client's default registry
    recorder.record_prediction(request_id, probabilities=p, model="fraud-scorer", version="v42")
    ...                                            # later, when the ground truth arrives
    recorder.record_label(request_id, label=1)

Every scrape sees one consistent snapshot (count, sum, sum of squares and buckets are read under the
same lock), so the operator's (n, sum, sumsq) per interval always describe the same requests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from lossgate.conventions import CALIBRATION_METRIC, DEFAULT_LOSS_METRIC
from lossgate.instrument.buckets import LOSS_BUCKETS, le_label, validate_buckets
from lossgate.instrument.calibration import calibrate, calibration_families, empty_bins
from lossgate.instrument.class_cap import DEFAULT_MAX_CLASSES, OTHER, ClassCap
from lossgate.instrument.losses import ArrayLike, log_probs, loss_from_log_probs

FOLDED_METRIC = "model_prediction_class_folded"

_Key = tuple[str, str, str | None]  # (model, version, class)


@dataclass
class _Pending:
    lp: npt.NDArray[np.float64]
    key: _Key
    deadline: float


@dataclass
class _Series:
    created: float
    predictions: int = 0
    count: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    buckets: list[int] = field(default_factory=list)  # per bucket (not cumulative), +Inf last
    # Reliability counters per confidence bin (docs/metrics.md, "Calibration").
    cal_count: list[float] = field(default_factory=empty_bins)
    cal_confidence: list[float] = field(default_factory=empty_bins)
    cal_correct: list[float] = field(default_factory=empty_bins)
    cal_brier: list[float] = field(default_factory=empty_bins)

    def copy(self) -> _Series:
        return _Series(
            self.created, self.predictions, self.count, self.sum, self.sumsq, list(self.buckets),
            list(self.cal_count), list(self.cal_confidence), list(self.cal_correct), list(self.cal_brier),
        )  # fmt: skip


class LossRecorder:
    """Joins predictions with their delayed labels and exports per-request cross-entropy.

    Metrics (labels model, version, and class when `klass` is given):
      <predictions_metric>               counter, predictions served (default model_predictions_total)
      <metric>                           histogram of per-request loss (default model_prediction_loss)
      <metric>_squared_sum               counter, sum of squared per-request loss
      model_prediction_pending_evicted_total{model,version,reason="capacity"|"ttl"}
      model_prediction_label_unknown_total   labels whose prediction id was unknown (expired or never seen)
      model_prediction_pending           gauge, predictions waiting for a label
      <calibration_metric>_{count,confidence,correct,brier}_total{bin}   reliability counters per
                                         confidence bin (default model_prediction_calibration; bins
                                         in docs/metrics.md), with <calibration_metric>_count_created

    Class labels are bounded: at most `max_classes` values per model version keep their own series,
    later ones are recorded as class "other" and counted in model_prediction_class_folded_total.
    Pending predictions are bounded: at most `capacity`, each kept for at most `ttl_s` seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        metric: str = DEFAULT_LOSS_METRIC,
        predictions_metric: str = "model_predictions_total",
        calibration_metric: str = CALIBRATION_METRIC,
        buckets: tuple[float, ...] | list[float] = LOSS_BUCKETS,
        capacity: int = 100_000,
        max_classes: int = DEFAULT_MAX_CLASSES,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("capacity must be >= 1 and ttl_s > 0")
        self.metric = metric
        self.predictions_metric = predictions_metric.removesuffix("_total")
        self.calibration_metric = calibration_metric
        self.buckets = validate_buckets(buckets)
        self._le = [le_label(b) for b in self.buckets] + ["+Inf"]
        self.capacity = capacity
        self.classes = ClassCap(max_classes)  # class label values beyond it are folded into "other"
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[Hashable, _Pending] = OrderedDict()
        self._series: dict[_Key, _Series] = {}
        self._evicted: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._unknown = 0
        self.registry = registry
        self._servers: list[Any] = []
        if registry is not None:
            registry.register(self)

    # Recording ------------------------------------------------------------------------------------
    def record_prediction(
        self,
        prediction_id: Hashable,
        probabilities: ArrayLike | None = None,
        logits: ArrayLike | None = None,
        *,
        model: str,
        version: str,
        klass: str | None = None,
    ) -> None:
        """Count a served prediction and keep its class distribution until its label arrives.

        Give the model's probabilities (binary: p(class 1), or one per class) or its logits (binary: the
        log-odds of class 1, or one score per class). Raises ValueError on malformed input.
        """
        lp = log_probs(probabilities, logits)  # outside the lock: the numeric work
        klass = self.classes.admit(str(model), str(version), None if klass is None else str(klass))
        key: _Key = (str(model), str(version), klass)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._state(key).predictions += 1
            self._pending.pop(prediction_id, None)  # a repeated id replaces the older prediction
            while len(self._pending) >= self.capacity:
                _, old = self._pending.popitem(last=False)
                self._evicted[(old.key[0], old.key[1], "capacity")] += 1
            self._pending[prediction_id] = _Pending(lp, key, now + self.ttl_s)

    def record_label(self, prediction_id: Hashable, label: int) -> float | None:
        """Observe the loss of a pending prediction; returns it, or None for an unknown/expired id.

        `label` is the true class index (binary: 0 or 1, bools accepted). An out-of-range label raises
        ValueError and leaves the prediction pending.
        """
        with self._lock:
            self._expire(self._clock())
            pending = self._pending.get(prediction_id)
            if pending is None:
                self._unknown += 1
                return None
            loss = loss_from_log_probs(pending.lp, label)
            cal = calibrate(pending.lp, label)
            del self._pending[prediction_id]
            s = self._state(pending.key)
            s.count += 1
            s.sum += loss
            s.sumsq += loss * loss
            s.buckets[self._bucket_index(loss)] += 1
            s.cal_count[cal.bin] += 1
            s.cal_confidence[cal.bin] += cal.confidence
            s.cal_correct[cal.bin] += cal.correct
            s.cal_brier[cal.bin] += cal.brier
            return loss

    def pending(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._pending)

    def serve(self, port: int = 0, addr: str = "0.0.0.0") -> int:  # noqa: S104 (a pod's scrape port)
        """Serve this recorder's registry on /metrics in a daemon thread; returns the bound port.

        (Or mount `prometheus_client.make_wsgi_app(registry)` / `make_asgi_app(registry)` in your app.)
        """
        server, _ = start_http_server(port, addr=addr, registry=self.registry or REGISTRY)
        self._servers.append(server)
        return int(server.server_address[1])

    def close(self) -> None:
        """Stop the /metrics servers started by serve() and unregister from the registry."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        if self.registry is not None:
            self.registry.unregister(self)
            self.registry = None

    # Internals ------------------------------------------------------------------------------------
    def _state(self, key: _Key) -> _Series:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(created=self._wall(), buckets=[0] * (len(self.buckets) + 1))
        return s

    def _bucket_index(self, loss: float) -> int:
        for i, bound in enumerate(self.buckets):
            if loss <= bound:
                return i
        return len(self.buckets)

    def _expire(self, now: float) -> None:
        # TTL is constant, so insertion order is deadline order: pop from the front until one is alive.
        while self._pending:
            pid, oldest = next(iter(self._pending.items()))
            if oldest.deadline > now:
                break
            del self._pending[pid]
            self._evicted[(oldest.key[0], oldest.key[1], "ttl")] += 1

    # prometheus_client collector protocol ---------------------------------------------------------
    def describe(self) -> list[Metric]:
        return list(self._families({}, {}, 0, 0, {}))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._expire(self._clock())
            series = {k: v.copy() for k, v in self._series.items()}
            evicted, unknown, pending = dict(self._evicted), self._unknown, len(self._pending)
        yield from self._families(series, evicted, unknown, pending, self.classes.folded())

    def _families(
        self,
        series: dict[_Key, _Series],
        evicted: dict[tuple[str, str, str], int],
        unknown: int,
        pending: int,
        folded: dict[tuple[str, str], int],
    ) -> Iterator[Metric]:
        preds = Metric(self.predictions_metric, "Predictions served.", "counter")
        hist = Metric(
            self.metric, "Per-request cross-entropy (nats), observed when the label arrives.", "histogram"
        )
        sq = Metric(
            f"{self.metric}_squared_sum", "Sum of squared per-request cross-entropy (nats^2).", "counter"
        )
        for (model, version, klass), s in sorted(series.items(), key=lambda kv: str(kv[0])):
            labels = {"model": model, "version": version} | ({"class": klass} if klass is not None else {})
            preds.add_sample(f"{self.predictions_metric}_total", labels, float(s.predictions))
            cumulative = 0
            for le, c in zip(self._le, s.buckets, strict=True):
                cumulative += c
                hist.add_sample(f"{self.metric}_bucket", labels | {"le": le}, float(cumulative))
            hist.add_sample(f"{self.metric}_count", labels, float(s.count))
            hist.add_sample(f"{self.metric}_sum", labels, s.sum)
            hist.add_sample(f"{self.metric}_created", labels, s.created)
            sq.add_sample(f"{self.metric}_squared_sum", labels, s.sumsq)
        ev = Metric(
            "model_prediction_pending_evicted", "Pending predictions dropped before their label.", "counter"
        )
        for (model, version, reason), c in sorted(evicted.items()):
            ev.add_sample(
                "model_prediction_pending_evicted_total",
                {"model": model, "version": version, "reason": reason},
                c,
            )
        unk = Metric(
            "model_prediction_label_unknown", "Labels for an unknown or expired prediction id.", "counter"
        )
        unk.add_sample("model_prediction_label_unknown_total", {}, float(unknown))
        gauge = Metric("model_prediction_pending", "Predictions waiting for their label.", "gauge")
        gauge.add_sample("model_prediction_pending", {}, float(pending))
        fold = Metric(FOLDED_METRIC, f"Predictions whose class label was folded into {OTHER!r}.", "counter")
        for (model, version), c in sorted(folded.items()):
            fold.add_sample(f"{FOLDED_METRIC}_total", {"model": model, "version": version}, float(c))
        yield from (preds, hist, sq, ev, unk, gauge, fold)
        yield from calibration_families(
            self.calibration_metric,
            {
                k: (s.created, (s.cal_count, s.cal_confidence, s.cal_correct, s.cal_brier))
                for k, s in series.items()
            },
        )
