"""Typed doors to the few kubernetes-client functions that ship without annotations, so the rest of
the package stays mypy-strict without scattering ignores (one place to look when the client changes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

__all__ = [
    "ApiException",
    "close",
    "kubeconfig_contexts",
    "load_incluster",
    "new_client",
    "watch_events",
]


def load_incluster() -> None:
    """The pod's ServiceAccount; raises config.ConfigException outside a pod."""
    config.load_incluster_config()  # type: ignore[no-untyped-call]


def new_client(config_file: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig (KUBECONFIG and its current context when None)."""
    api = config.new_client_from_config(config_file=config_file, context=context)  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, api)


def kubeconfig_contexts(config_file: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """All contexts of the kubeconfig and the active one."""
    contexts, active = config.list_kube_config_contexts(config_file=config_file)  # type: ignore[no-untyped-call]
    return cast(list[dict[str, Any]], contexts), cast(dict[str, Any] | None, active)


def watch_events(list_call: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Watch events of a list call, stopping the watch however the caller leaves the loop."""
    w = watch.Watch()  # type: ignore[no-untyped-call]
    try:
        for event in w.stream(list_call, *args, **kwargs):  # type: ignore[no-untyped-call]
            yield cast(dict[str, Any], event)
    finally:
        w.stop()  # type: ignore[no-untyped-call]


def close(api: client.ApiClient) -> None:
    api.close()  # type: ignore[no-untyped-call]
