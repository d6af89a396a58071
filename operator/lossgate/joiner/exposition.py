"""The joiner's /metrics: the `model_prediction_loss_*` series the operator reads (same names,
labels, buckets and `_created` as lossgate.instrument.LossRecorder), label coverage and delay, and
the paired counters of requests two versions of one model both predicted (PAIRED_METRIC).

Every value comes from the store's durable counters, so a restarted joiner re-exports the same
monotone counters with the same `_created` (the operator's counter reader sees no reset).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from lossgate.conventions import CALIBRATION_METRIC, DEFAULT_LOSS_METRIC, DEFAULT_TOKEN_METRIC
from lossgate.instrument.buckets import LOSS_BUCKETS, le_label
from lossgate.instrument.calibration import calibration_families
from lossgate.instrument.tokens import TokenSums, token_families
from lossgate.joiner.accounting import DELAY_BUCKETS, PairSums, Series
from lossgate.joiner.records import PairKey, SeriesKey
from lossgate.joiner.store import Store

_LOSS_LE = [le_label(b) for b in LOSS_BUCKETS] + ["+Inf"]
_DELAY_LE = [le_label(b) for b in DELAY_BUCKETS] + ["+Inf"]
DELAY_METRIC = "model_prediction_label_delay_seconds"
EXPIRED_METRIC = "model_prediction_expired"
FOLDED_METRIC = "lossgate_joiner_class_folded"
# Labelled requests two versions both predicted: a summary of `version`'s loss on them (_count, _sum,
# _created) per {version, baseline_version}, exported in both orientations, and the sum of the squared
# difference. Every value is monotone (a counter reader sees no false reset); the sum of
# d = loss(version) - loss(baseline_version) is _sum{version=c, baseline_version=b} minus
# _sum{version=b, baseline_version=c}.
PAIRED_METRIC = f"{DEFAULT_LOSS_METRIC}_paired"


def _labels(key: SeriesKey) -> dict[str, str]:
    model, version, klass = key
    return {"model": model, "version": version} | ({"class": klass} if klass is not None else {})


def _histogram(metric: Metric, name: str, le: list[str], counts: list[int], labels: dict[str, str]) -> None:
    cumulative = 0
    for bound, c in zip(le, counts, strict=True):
        cumulative += c
        metric.add_sample(f"{name}_bucket", labels | {"le": bound}, float(cumulative))


def paired_families(pairs: dict[PairKey, PairSums]) -> Iterator[Metric]:
    m = PAIRED_METRIC
    paired = Metric(m, "Loss of `version` on requests `baseline_version` also predicted (nats).", "summary")
    sq = Metric(f"{m}_diff_squared_sum", "Sum of squared paired loss differences (nats^2).", "counter")
    for (model, a, b, klass), p in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        for version, baseline, total in ((b, a, p.sum_b), (a, b, p.sum_a)):
            labels = {"model": model, "version": version, "baseline_version": baseline}
            labels |= {"class": klass} if klass is not None else {}
            paired.add_sample(f"{m}_count", labels, float(p.count))
            paired.add_sample(f"{m}_sum", labels, total)
            paired.add_sample(f"{m}_created", labels, p.created)
            sq.add_sample(f"{m}_diff_squared_sum", labels, p.sumsq)
    yield from (paired, sq)


def families(series: dict[SeriesKey, Series], outcomes: dict[str, int]) -> Iterator[Metric]:
    m = DEFAULT_LOSS_METRIC
    preds = Metric("model_predictions", "Predictions received by the joiner.", "counter")
    hist = Metric(m, "Per-request cross-entropy (nats), observed when the label arrives.", "histogram")
    sq = Metric(f"{m}_squared_sum", "Sum of squared per-request cross-entropy (nats^2).", "counter")
    expired = Metric(EXPIRED_METRIC, "Predictions that expired without a label, by reason.", "counter")
    pending = Metric("model_prediction_pending", "Predictions waiting for their label.", "gauge")
    delay = Metric(DELAY_METRIC, "Label time minus serving time of labelled predictions.", "histogram")
    for key, s in sorted(series.items(), key=lambda kv: str(kv[0])):
        labels = _labels(key)
        preds.add_sample("model_predictions_total", labels, float(s.predictions))
        _histogram(hist, m, _LOSS_LE, s.buckets, labels)
        hist.add_sample(f"{m}_count", labels, float(s.count))
        hist.add_sample(f"{m}_sum", labels, s.sum)
        hist.add_sample(f"{m}_created", labels, s.created)
        sq.add_sample(f"{m}_squared_sum", labels, s.sumsq)
        for reason, n in sorted(s.expired.items()):
            expired.add_sample(f"{EXPIRED_METRIC}_total", labels | {"reason": reason}, float(n))
        pending.add_sample("model_prediction_pending", labels, float(s.pending))
        _histogram(delay, DELAY_METRIC, _DELAY_LE, s.delay_buckets, labels)
        delay.add_sample(f"{DELAY_METRIC}_count", labels, float(s.count))
        delay.add_sample(f"{DELAY_METRIC}_sum", labels, s.delay_sum)
        delay.add_sample(f"{DELAY_METRIC}_created", labels, s.created)
    labels_total = Metric("lossgate_joiner_labels", "Labels received, by outcome.", "counter")
    refused = Metric("lossgate_joiner_predictions_refused", "Predictions not stored, by reason.", "counter")
    for name, n in sorted(outcomes.items()):
        kind, _, what = name.partition("_")
        if kind == "label":
            labels_total.add_sample("lossgate_joiner_labels_total", {"outcome": what}, float(n))
        else:
            refused.add_sample("lossgate_joiner_predictions_refused_total", {"reason": what}, float(n))
    yield from (preds, hist, sq, expired, pending, delay, labels_total, refused)
    yield from calibration_families(
        CALIBRATION_METRIC,
        {
            key: (
                s.created,
                (
                    [float(x) for x in s.cal_count],
                    s.cal_confidence,
                    [float(x) for x in s.cal_correct],
                    s.cal_brier,
                ),
            )
            for key, s in series.items()
        },
    )
    yield from token_families(DEFAULT_TOKEN_METRIC, _token_sums(series))


def _token_sums(series: dict[SeriesKey, Series]) -> dict[tuple[str, str], TokenSums]:
    """A language model's token counters per (model, version), summed over its classes (if any)."""
    out: dict[tuple[str, str], TokenSums] = {}
    for (model, version, _), s in sorted(series.items(), key=lambda kv: str(kv[0])):
        t = s.tokens
        if t is None:
            continue
        have = out.get((model, version))
        out[(model, version)] = t if have is None else TokenSums(
            min(have.created, t.created), have.n + t.n, have.nats + t.nats, have.tokens + t.tokens,
            have.nats_squared + t.nats_squared, have.tokens_squared + t.tokens_squared,
            have.nats_tokens + t.nats_tokens,
        )  # fmt: skip
    return out


class _Collector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield from families(self.store.snapshot(), self.store.outcomes())
        yield from paired_families(self.store.pairs())


class _Standby:
    def collect(self) -> Iterator[Metric]:
        yield from families({}, {})


def render(store: Store, folded: dict[tuple[str, str], int] | None = None) -> bytes:
    """The Prometheus text exposition of the store's counters, read in one consistent snapshot, or
    (a replica that does not hold the exporter lease) only `lossgate_joiner_exporter 0`. `folded`:
    this replica's predictions whose class was folded into "other" (lossgate.instrument.class_cap)."""
    registry = CollectorRegistry(auto_describe=False)
    exporting = store.exporter()
    registry.register(_Collector(store) if exporting else _Standby())
    g = Metric("lossgate_joiner_exporter", "1 when this replica exports the shared counters.", "gauge")
    g.add_sample("lossgate_joiner_exporter", {}, 1.0 if exporting else 0.0)
    fold = Metric(FOLDED_METRIC, "Predictions whose class label was folded into 'other' here.", "counter")
    for (model, version), n in sorted((folded or {}).items()):
        fold.add_sample(f"{FOLDED_METRIC}_total", {"model": model, "version": version}, float(n))
    registry.register(_Fixed([g, fold]))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics
