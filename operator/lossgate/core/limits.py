"""Bounds of the data the judge reads, shared by the estimator, the test and the display."""

from __future__ import annotations

import math

# The exporter clips p(true) at 1e-6, so every per-request cross-entropy lies in [0, -ln(1e-6)]
# (13.8155 nats). The sequential test is exact because of this bound, and with no information the
# confidence sequence for the difference of two means is [-bound, +bound] (finite, and still true).
LOSS_BOUND_NATS = -math.log(1e-6)
