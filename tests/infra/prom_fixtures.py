"""Function fixtures: a fresh real Prometheus (Debian package) per test, and a Pushgateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lossgate_dev.devenv.prom import Prometheus, Pushgateway


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus.start(tmp_path_factory.mktemp("prom"), scrape_interval="1s")
    yield prom
    prom.stop()


@pytest.fixture
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    gw = Pushgateway.start(tmp_path_factory.mktemp("pushgateway"))
    yield gw
    gw.stop()
