"""A bound on the `class` label values of one model version: every class label is a set of series in
Prometheus (a histogram of 16 buckets and 5 counters), so an unbounded label (a user id passed as
`klass` by mistake) would grow Prometheus without limit. The first `max_classes` values seen per
(model, version) keep their own series; later ones are folded into OTHER and counted.

Per process: replicas of the label joiner each admit their own first `max_classes`, so across N
replicas a version has at most N x max_classes class series (docs/metrics.md).
"""

from __future__ import annotations

import threading
from collections import defaultdict

OTHER = "other"
DEFAULT_MAX_CLASSES = 32


class ClassCap:
    def __init__(self, max_classes: int = DEFAULT_MAX_CLASSES) -> None:
        if max_classes < 1:
            raise ValueError(f"max_classes must be >= 1, got {max_classes}")
        self.max_classes = max_classes
        self._seen: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self._folded: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def admit(self, model: str, version: str, klass: str | None) -> str | None:
        """The class label to record: `klass` itself, or OTHER once the version has max_classes."""
        if klass is None:
            return None
        key = (model, version)
        with self._lock:
            seen = self._seen[key]
            if klass in seen or klass == OTHER:
                return klass
            if len(seen) < self.max_classes:
                seen.add(klass)
                return klass
            self._folded[key] += 1
            return OTHER

    def folded(self) -> dict[tuple[str, str], int]:
        """Predictions folded into OTHER so far, per (model, version)."""
        with self._lock:
            return dict(self._folded)
