"""The Redis store (its Lua scripts) against the same ledger as the SQLite store, on a real
redis-server: any sequence of predictions, redeliveries, labels, expiries and restarts leaves the
counters equal to the ledger's."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings

from lossgate.joiner.redis_store import RedisStore
from lossgate_dev.devenv.redis import RedisServer
from tests.unit.test_joiner_core import OPS, T0, TTL, check_against_ledger

_prefixes = itertools.count()


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_redis_store_equals_the_ledger(
    redis_server: RedisServer, ops: list[tuple[str, int, float, float]]
) -> None:
    # Given a fresh key prefix on the shared Redis (each example its own state)
    prefix = f"{{t{next(_prefixes)}}}"
    check_against_ledger(
        lambda: RedisStore(redis_server.url, prefix=prefix, capacity=1000, ttl_s=TTL, wall=lambda: T0), ops
    )
