"""lossgate.instrument: helpers for model servers and training jobs to export what the operator reads.

Independent of the operator (import-linter checks it): depends on prometheus_client and numpy only;
the framework hooks (lossgate.instrument.hooks.*, the `lossgate[torch]` extra) import torch, and only
when imported themselves.
See docs/metrics.md for metric names, labels, buckets and the PromQL the operator runs.
"""

from lossgate.conventions import CATASTROPHIC_LOSS_NATS as CATASTROPHIC_LOSS
from lossgate.conventions import MAX_LOSS_NATS as MAX_LOSS
from lossgate.conventions import PROB_FLOOR
from lossgate.instrument.buckets import LOSS_BUCKETS
from lossgate.instrument.losses import cross_entropy, log_probs
from lossgate.instrument.requests import LATENCY_BUCKETS, RequestMetrics
from lossgate.instrument.serving import LossRecorder
from lossgate.instrument.tokens import TokenLossRecorder, TokenSums
from lossgate.instrument.training import TRAINING_METRICS, TrainingExporter

__all__ = [
    "CATASTROPHIC_LOSS",
    "LATENCY_BUCKETS",
    "LOSS_BUCKETS",
    "MAX_LOSS",
    "PROB_FLOOR",
    "TRAINING_METRICS",
    "LossRecorder",
    "RequestMetrics",
    "TokenLossRecorder",
    "TokenSums",
    "TrainingExporter",
    "cross_entropy",
    "log_probs",
]
