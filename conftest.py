"""Root conftest: registers the real-server fixtures and guards CI against silent skips."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.infra.kube_fixtures",
    "tests.infra.prom_fixtures",
    "tests.infra.redis_fixtures",
    "tests.infra.thirdparty_crds",
]

_REAL_SERVER_FIXTURES = {"kube", "prometheus", "pushgateway", "redis_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", []))
        if names & _REAL_SERVER_FIXTURES:
            item.add_marker(pytest.mark.realserver)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realserver: uses the real API server or Prometheus")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI a skipped real-server test is a failure: CI must never pass without the real servers.
    if os.environ.get("CI") and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
        real = [
            r for r in (reporter.stats.get("passed", []) if reporter else []) if "realserver" in r.keywords
        ]
        if skipped or not real:
            print(f"\nCI guard: {skipped} skipped, {len(real)} real-server tests passed -> failing the run")
            session.exitstatus = 1
