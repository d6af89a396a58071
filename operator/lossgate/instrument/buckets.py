"""Histogram buckets for per-request cross-entropy (nats) and the constants the operator relies on."""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

from lossgate.conventions import (
    CATASTROPHIC_LOSS_NATS as CATASTROPHIC_LOSS,  # the public name in lossgate.instrument
)

# Upper bounds (le). Dense where a calibrated classifier puts most requests (0.001-1 nats), ln 2 for a
# coin-flip on a binary task, the catastrophic bound 4.6 exactly, and 14 above the clipped maximum.
LOSS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.693, 1.0,
    1.5, 2.0, 3.0, CATASTROPHIC_LOSS, 7.0, 10.0, 14.0,
)  # fmt: skip


def le_label(bound: float) -> str:
    """The `le` label value prometheus_client writes for a bucket bound (4.6 -> "4.6", inf -> "+Inf")."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def validate_buckets(buckets: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """Sorted, finite, positive bounds that include the catastrophic threshold exactly."""
    bounds = tuple(float(b) for b in buckets)
    if not bounds or any(not (0 < b < float("inf")) for b in bounds):
        raise ValueError(f"loss buckets must be finite and positive, got {bounds}")
    if list(bounds) != sorted(set(bounds)):
        raise ValueError(f"loss buckets must be strictly increasing, got {bounds}")
    if CATASTROPHIC_LOSS not in bounds:
        raise ValueError(
            f"loss buckets must include {CATASTROPHIC_LOSS} (the catastrophic-loss bound the operator reads)"
        )
    return bounds
