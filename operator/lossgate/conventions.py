"""Numbers the exporter, the adapters and the judge must agree on (each defined here once).

Pure: no imports from the rest of lossgate, so `lossgate.instrument` (which model servers embed) and
the operator's layers can all use it.
"""

from __future__ import annotations

import math

# p(true class) is clipped at this floor, so one label can never produce an infinite loss.
PROB_FLOOR = 1e-6
# -ln(PROB_FLOOR): the largest loss any single request can contribute (13.8155... nats). Every
# per-request cross-entropy lies in [0, MAX_LOSS_NATS]; the judge's sequential test is exact because
# of this bound, and with no information its interval for a difference of means is +-MAX_LOSS_NATS.
MAX_LOSS_NATS = -math.log(PROB_FLOOR)
# The catastrophic guard's threshold: loss > 4.6 nats, i.e. p(true) < 0.01. It is a histogram bucket
# bound, so the operator reads "labelled predictions with loss above it" as `_count - _bucket{le}`.
CATASTROPHIC_LOSS_NATS = 4.6
# The per-request loss histogram's base name (its _count, _sum, _bucket and the _squared_sum series).
DEFAULT_LOSS_METRIC = "model_prediction_loss"


def le_label(bound: float) -> str:
    """A bucket bound as prometheus_client writes it in `le` (4.6 -> "4.6", 10 -> "10.0", inf -> "+Inf").

    Prometheus 3 normalises every scraped `le` to this form as well, so a selector built with it
    matches our exporter's bucket. Same rules as prometheus_client.utils.floatToGoString (a test
    checks they agree), written out because this module imports nothing.
    """
    d = float(bound)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to an exponent sooner than Python's repr
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


# The `le` of the catastrophic-loss bucket, as the exporter writes it ("4.6").
CATASTROPHIC_LE = le_label(CATASTROPHIC_LOSS_NATS)

# Reliability counters (docs/metrics.md, "Calibration"): the top-class probability (confidence) of
# each labelled prediction falls in one of CALIBRATION_BINS equal-width bins, bin i = [i/B, (i+1)/B)
# and a confidence of exactly 1 in the last. 15 bins is the common choice for ECE (Guo et al. 2017)
# and torchmetrics' default; fixed here so that exporters, the operator and the tests agree.
CALIBRATION_BINS = 15
# Counters per (model, version[, class], bin): <metric>_count_total, _confidence_total (sum of the
# confidence), _correct_total (top class == label) and _brier_total (sum of the Brier score), and
# <metric>_created.
CALIBRATION_METRIC = "model_prediction_calibration"
# The Brier score of a predicted distribution, sum_k (p_k - 1[k = label])^2, lies in [0, 2].
BRIER_MAX = 2.0


def calibration_bin(confidence: float) -> int:
    """The bin of a top-class probability in [0, 1] (out-of-range values go to the nearest end)."""
    return min(max(int(confidence * CALIBRATION_BINS), 0), CALIBRATION_BINS - 1)


# A language model's token-level loss counters (docs/metrics.md, "Token loss"): per (model, version),
# with S the summed token NLL of one request's reference continuation and T its tokens,
# <base>_requests_total (n), <base>_nats_total (sum S), <base>_tokens_total (sum T),
# <base>_nats_squared_total (sum S^2), <base>_tokens_squared_total (sum T^2) and
# <base>_nats_tokens_total (sum S T): what the delta-method judge of the loss per token needs.
DEFAULT_TOKEN_METRIC = "model_token_nll"  # noqa: S105 (a metric name, not a secret)
TOKEN_COUNTER_SUFFIXES = (
    "requests_total",
    "nats_total",
    "tokens_total",
    "nats_squared_total",
    "tokens_squared_total",
    "nats_tokens_total",
)
