"""Function fixture: a fresh real Redis (Debian's redis-server) per test, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lossgate_dev.devenv.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
