"""lossgate's kopf handlers run in-process against a test API server: the real watches and the real
startup handler, with a Deps the test holds (so it can count the routers' requests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from kopf._cogs.structs.credentials import Vault  # a pre-filled vault: no kubeconfig, no global config
from kubernetes import client

import lossgate.reconcile.handlers  # noqa: F401  (registers the handlers in kopf's default registry)
from lossgate.reconcile.deps import Deps, OperatorConfig


@dataclass
class Requests:
    """Every request a client sent, as (method, path without the host and query)."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def count(self, method: str, path_end: str) -> int:
        return sum(1 for m, p in self.seen if m == method and p.endswith(path_end))


def counting_client(server: str, ca_cert: Path, token: str) -> tuple[client.ApiClient, Requests]:
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = str(ca_cert)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(cfg)
    requests, call = Requests(), api.call_api

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        requests.seen.append((method, url.removeprefix(server).split("?")[0]))
        return call(method, url, *args, **kwargs)

    api.call_api = counted  # type: ignore[method-assign]
    return api, requests


@contextmanager
def operator_running(
    deps: Deps, server: str, ca_cert: Path, token: str, namespaces: list[str]
) -> Iterator[None]:
    """kopf.operator in a thread of its own, watching `namespaces`; stopped (and `deps` closed by
    the cleanup handler) on exit."""
    stop, ready, failed = threading.Event(), threading.Event(), []
    vault = Vault(
        {"test": kopf.ConnectionInfo(server=server, ca_path=str(ca_cert), scheme="Bearer", token=token)}
    )

    def main() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    memo=kopf.Memo(deps=deps),
                    namespaces=namespaces,
                    standalone=True,
                    vault=vault,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), f"the operator did not start: {failed}"
        yield
        assert not failed, failed
    finally:
        stop.set()
        thread.join(30)


def operator_deps(api: client.ApiClient, namespaces: list[str]) -> Deps:
    return Deps(api_client=api, settings=OperatorConfig(namespaces=tuple(namespaces), metrics_port=0))
