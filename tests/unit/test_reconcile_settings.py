"""Operator-wide settings reach what they set: LOSSGATE_* variables -> OperatorConfig -> kopf's settings,
the tick gate, the thread pools and the heap trimmer."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kubernetes import client

from lossgate.reconcile import handlers, route_cache
from lossgate.reconcile.deps import Deps, OperatorConfig
from lossgate.reconcile.threads import POOLS, Pools


def test_scale_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the scale settings in the operator's environment
    for name, value in {
        "LOSSGATE_MAX_CONCURRENT_TICKS": "7",
        "LOSSGATE_KUBE_THREADS": "5",
        "LOSSGATE_KOPF_WORKERS": "33",
        "LOSSGATE_MALLOC_TRIM_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    # When the configuration is read, then each lands in its field
    cfg = OperatorConfig.from_env()
    assert (cfg.max_concurrent_ticks, cfg.kube_threads, cfg.kopf_workers, cfg.malloc_trim_s) == (
        7,
        5,
        33,
        0.0,
    )
    # And a value that is not a count is refused naming the variable
    monkeypatch.setenv("LOSSGATE_MAX_CONCURRENT_TICKS", "many")
    with pytest.raises(SystemExit, match="LOSSGATE_MAX_CONCURRENT_TICKS"):
        OperatorConfig.from_env()


def test_startup_hands_the_settings_to_kopf_the_gate_and_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Deps with non-default scale settings (no API server: the route watches are stubbed)
    monkeypatch.setattr(route_cache, "watchable", lambda *_: [])
    monkeypatch.setattr(route_cache, "start_watches", lambda kinds: None)
    cfg = OperatorConfig(
        metrics_port=0, max_concurrent_ticks=7, kube_threads=5, kopf_workers=33, malloc_trim_s=60
    )
    deps = Deps(api_client=client.ApiClient(), settings=cfg)
    settings = kopf.OperatorSettings()
    memo: Any = kopf.Memo(deps=deps)
    # When kopf runs the startup handler
    try:
        asyncio.run(handlers.configure(settings=settings, memo=memo))
        # Then kopf's per-object workers are bounded, idle ones leave after a second
        assert settings.queueing.worker_limit == 33
        assert settings.queueing.idle_timeout == handlers.KOPF_WORKER_IDLE_S
        # And the tick gate, the routine thread pool and the trimmer follow the settings
        assert deps.gate.limit == 7
        assert POOLS.pool(urgent=False)._max_workers == 5
        assert deps.trimmer.alive
    finally:
        deps.close()
        POOLS.configure(Pools().sizes[False])  # the next test's pool has the default size again
    assert not deps.trimmer.alive
