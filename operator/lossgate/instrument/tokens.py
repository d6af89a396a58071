"""Token-level loss counters of a language model (docs/metrics.md, "Token loss").

For each labelled request the server (or the joiner) knows S, the summed NLL of the reference
continuation's tokens (each clipped at MAX_LOSS nats, p(token) >= 1e-6), and T, its tokens. Per
(model, version) the counters hold n, sum S, sum T, sum S^2, sum T^2 and sum S T: the ratio
sum S / sum T is the mean NLL per token (perplexity = exp of it), and the squared and cross sums give
the delta method's per-request variance of S - r T exactly, which the operator's judge needs.

    recorder = TokenLossRecorder()                    # registers on prometheus_client's registry
    nll, tokens = continuation_nll(model, prompt_ids, reference_ids)   # lossgate.instrument.lm
    recorder.record(nll, tokens, model="chat", version="v7")
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from lossgate.conventions import DEFAULT_TOKEN_METRIC, MAX_LOSS_NATS

_HELP = {
    "requests": "Labelled requests whose reference continuation's token NLL was counted.",
    "nats": "Sum over requests of the summed token NLL of the reference continuation (nats).",
    "tokens": "Sum over requests of the reference continuation's tokens.",
    "nats_squared": "Sum over requests of the squared summed token NLL (nats^2).",
    "tokens_squared": "Sum over requests of the squared token count.",
    "nats_tokens": "Sum over requests of summed token NLL times tokens (nats).",
}


@dataclass(frozen=True, slots=True)
class TokenSums:
    """The counters of one (model, version); `created` is when the series began (unix seconds)."""

    created: float
    n: int = 0
    nats: float = 0.0
    tokens: int = 0
    nats_squared: float = 0.0
    tokens_squared: int = 0
    nats_tokens: float = 0.0

    def add(self, nll: float, tokens: int) -> TokenSums:
        return replace(
            self, n=self.n + 1, nats=self.nats + nll, tokens=self.tokens + tokens,
            nats_squared=self.nats_squared + nll * nll, tokens_squared=self.tokens_squared + tokens * tokens,
            nats_tokens=self.nats_tokens + nll * tokens,
        )  # fmt: skip

    def values(self) -> dict[str, float]:
        return {
            "requests": float(self.n), "nats": self.nats, "tokens": float(self.tokens),
            "nats_squared": self.nats_squared, "tokens_squared": float(self.tokens_squared),
            "nats_tokens": self.nats_tokens,
        }  # fmt: skip


def check_token_label(nll: object, tokens: object, max_tokens: int | None = None) -> tuple[float, int]:
    """(S, T) of one request, or ValueError saying what is wrong: T an integer >= 1 (at most
    max_tokens), S a finite number in [0, MAX_LOSS x T] (each token's NLL is clipped at MAX_LOSS)."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be an integer >= 1, got {tokens!r}")
    if max_tokens is not None and tokens > max_tokens:
        raise ValueError(f"tokens {tokens} exceeds max_tokens {max_tokens}: truncate the reference first")
    if isinstance(nll, bool) or not isinstance(nll, int | float) or not math.isfinite(nll):
        raise ValueError(f"token_nll must be a finite number of nats, got {nll!r}")
    # Rounding of a sum of clipped terms may overshoot the bound by a few ulps: allow that much.
    if nll < 0 or nll > MAX_LOSS_NATS * tokens * (1 + 1e-9):
        raise ValueError(
            f"token_nll {nll!r} is outside [0, {MAX_LOSS_NATS:.4f} x {tokens} tokens]: clip each token's "
            "NLL at -ln(1e-6) (lossgate.instrument.lm does)"
        )
    return min(float(nll), MAX_LOSS_NATS * tokens), tokens


def token_families(metric: str, series: Mapping[tuple[str, str], TokenSums]) -> Iterator[Metric]:
    """The six counter families (with `_created`) of every (model, version)."""
    for part, help_text in _HELP.items():
        m = Metric(f"{metric}_{part}", help_text, "counter")
        for (model, version), s in sorted(series.items()):
            labels = {"model": model, "version": version}
            m.add_sample(f"{metric}_{part}_total", labels, s.values()[part])
            m.add_sample(f"{metric}_{part}_created", labels, s.created)
        yield m


class TokenLossRecorder:
    """Exports the token-level loss counters of the reference continuations a server scored."""

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        metric: str = DEFAULT_TOKEN_METRIC,
        max_tokens: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.metric = metric
        self.max_tokens = max_tokens
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], TokenSums] = {}
        self.registry = registry
        if registry is not None:
            registry.register(self)

    def record(self, token_nll: float, tokens: int, *, model: str, version: str) -> None:
        """Count one labelled request: S = token_nll (nats, summed over the reference), T = tokens."""
        nll, t = check_token_label(token_nll, tokens, self.max_tokens)
        key = (str(model), str(version))
        with self._lock:
            s = self._series.get(key) or TokenSums(created=self._wall())
            self._series[key] = s.add(nll, t)

    def snapshot(self) -> dict[tuple[str, str], TokenSums]:
        with self._lock:
            return dict(self._series)

    def close(self) -> None:
        if self.registry is not None:
            self.registry.unregister(self)
            self.registry = None

    def describe(self) -> list[Metric]:
        return list(token_families(self.metric, {}))

    def collect(self) -> Iterator[Metric]:
        yield from token_families(self.metric, self.snapshot())  # one consistent snapshot per scrape
