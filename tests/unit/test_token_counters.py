"""Token-level loss counters (lossgate.instrument.tokens): exact against a ledger, exported with
`_created`, bad input refused with what is wrong."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lossgate.conventions import MAX_LOSS_NATS, TOKEN_COUNTER_SUFFIXES
from lossgate.instrument.tokens import TokenLossRecorder, check_token_label

_request = st.integers(1, 4096).flatmap(
    lambda t: st.tuples(st.floats(0.0, MAX_LOSS_NATS * t, allow_nan=False), st.just(t))
)


@settings(max_examples=60, deadline=None)
@given(requests=st.lists(st.tuples(st.sampled_from(["v1", "v2"]), _request), max_size=60))
def test_counters_are_exact_against_a_ledger(requests: list[tuple[str, tuple[float, int]]]) -> None:
    # Given requests of two versions, each with its summed token NLL S and tokens T
    registry = CollectorRegistry()
    recorder = TokenLossRecorder(registry, wall_clock=lambda: 1700000000.0)
    for version, (nll, tokens) in requests:
        recorder.record(nll, tokens, model="lm", version=version)
    # When the registry is scraped
    text = generate_latest(registry).decode()
    got = {
        (s.name, s.labels["version"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    # Then every counter is the ledger's sum for its version (integers exactly, floats as fsum)
    for version in ("v1", "v2"):
        mine = [r for v, r in requests if v == version]
        if not mine:
            assert ("model_token_nll_requests_total", version) not in got
            continue
        ledger = {
            "requests_total": len(mine),
            "nats_total": math.fsum(s for s, _ in mine),
            "tokens_total": sum(t for _, t in mine),
            "nats_squared_total": math.fsum(s * s for s, _ in mine),
            "tokens_squared_total": sum(t * t for _, t in mine),
            "nats_tokens_total": math.fsum(s * t for s, t in mine),
        }
        assert set(ledger) == set(TOKEN_COUNTER_SUFFIXES)
        for suffix, want in ledger.items():
            assert got[(f"model_token_nll_{suffix}", version)] == pytest.approx(want, rel=1e-12, abs=1e-9)
        assert got[("model_token_nll_requests_created", version)] == 1700000000.0


@pytest.mark.parametrize(
    ("nll", "tokens", "match"),
    [
        (1.0, 0, "tokens must be an integer >= 1"),
        (1.0, 2.5, "tokens must be an integer"),
        (math.nan, 3, "finite"),
        (-0.1, 3, "outside"),
        (MAX_LOSS_NATS * 3 + 1, 3, "clip each token"),
        (1.0, 9000, "exceeds max_tokens"),
    ],
)
def test_bad_token_labels_are_refused(nll: float, tokens: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_token_label(nll, tokens, max_tokens=4096)
