"""Paired counters of the Redis store (its Lua scripts) on a real redis-server, against the same
ledger as the SQLite store: two versions of one model predicting one id, labels, expiries, restarts."""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import HealthCheck, given, settings

from lossgate.instrument import cross_entropy
from lossgate.joiner import parse
from lossgate.joiner.redis_store import RedisStore
from lossgate_dev.devenv.redis import RedisServer
from tests.unit.test_joiner_core import T0, TTL
from tests.unit.test_joiner_pairs import PAIR_OPS, PairOp, check_pairs_against_ledger

_prefixes = itertools.count()


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=PAIR_OPS)
def test_redis_pairs_equal_the_ledger(redis_server: RedisServer, ops: list[PairOp]) -> None:
    # Given a fresh key prefix on the shared Redis (each example its own state)
    prefix = f"{{pp{next(_prefixes)}}}"
    check_pairs_against_ledger(
        lambda: RedisStore(redis_server.url, prefix=prefix, capacity=1000, ttl_s=TTL, wall=lambda: T0), ops
    )


def test_a_label_racing_a_new_arm_counts_both_arms(redis_server: RedisServer) -> None:
    # Given id x pending for v1, and v2's prediction landing between the label's read and its script
    store = RedisStore(redis_server.url, prefix="{race}", capacity=10, ttl_s=TTL, wall=lambda: T0)
    one = {"id": "x", "model": "m", "probabilities": 0.8}
    store.add_predictions(parse.predictions({"predictions": [one | {"version": "v1"}]}, T0), T0)
    script, calls = store._label, []

    def racing(keys: list[Any], args: list[Any]) -> Any:
        if not calls:
            store.add_predictions(parse.predictions({"predictions": [one | {"version": "v2"}]}, T0), T0)
        calls.append(1)
        return script(keys=keys, args=args)

    store._label = racing  # type: ignore[assignment]
    # When the label arrives
    result = store.add_labels(parse.labels({"labels": [{"id": "x", "label": 1}]}), T0)
    # Then the stale read is scored again: one join, both arms counted, one pair, nothing pending
    assert (result.joined, result.duplicate, result.unknown, len(calls)) == (1, 0, 0, 2)
    assert {k[1]: s.count for k, s in store.snapshot().items()} == {"v1": 1, "v2": 1}
    assert store.pairs()[("m", "v1", "v2", None)].count == 1
    assert store.pending() == 0
    store.close()


def test_two_versions_of_one_request_are_paired(redis_server: RedisServer) -> None:
    # Given ids r0..r19 predicted by v1 (p=0.8) and v2 (p=0.3) of model m, in one batch each
    store = RedisStore(redis_server.url, prefix="{pair}", capacity=100, ttl_s=TTL, wall=lambda: T0)
    for v, p in (("v1", 0.8), ("v2", 0.3)):
        docs = [{"id": f"r{i}", "model": "m", "version": v, "probabilities": p} for i in range(20)]
        assert store.add_predictions(parse.predictions({"predictions": docs}, T0), T0).accepted == 20
    assert store.pending() == 40
    # When each is labelled 1 (twice: a redelivery)
    labels = parse.labels({"labels": [{"id": f"r{i}", "label": 1} for i in range(20)]})
    first, again = store.add_labels(labels, T0), store.add_labels(labels, T0)
    # Then 20 ids joined once, both arms counted, and the pair holds 20 differences
    assert (first.joined, again.duplicate) == (20, 20)
    la, lb = cross_entropy(1, probabilities=0.8), cross_entropy(1, probabilities=0.3)
    p = store.pairs()[("m", "v1", "v2", None)]
    assert p.count == 20
    assert math.isclose(p.sum_b - p.sum_a, 20 * (lb - la), rel_tol=1e-12)
    assert math.isclose(p.sumsq, 20 * (lb - la) ** 2, rel_tol=1e-12)
    assert store.pending() == 0
    store.close()
