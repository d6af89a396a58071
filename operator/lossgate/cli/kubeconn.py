"""The CLI's connection to the API server: kubeconfig/context (like kubectl), ModelRollout reads and
the manual-command annotation write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config

from lossgate.adapters.kube import typed
from lossgate.model.resource import PLURAL
from lossgate.model.spec import API_GROUP, API_VERSION


class CliError(Exception):
    """A problem to print as one line (no traceback) with a non-zero exit."""


class UsageError(CliError):
    """A bad or missing argument: one line, exit code 2 (as argparse's own argument errors)."""


def _kubeconfig_path(kubeconfig: str | None) -> str | None:
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env:
        return env.split(os.pathsep)[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def connect(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str]:
    """An ApiClient and the context's default namespace, from the kubeconfig or in-cluster."""
    path = _kubeconfig_path(kubeconfig)
    if path is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        typed.load_incluster()
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return client.ApiClient(), ns_file.read_text().strip() if ns_file.exists() else "default"
    if path is None:
        raise CliError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    try:
        api = typed.new_client(config_file=path, context=context)
        contexts, active = typed.kubeconfig_contexts(path)
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
    except (config.ConfigException, OSError) as err:
        raise CliError(f"kubeconfig {path}: {err}") from err
    namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return api, namespace


class Rollouts:
    """ModelRollout reads and annotation writes through one ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name),
            )
        except client.ApiException as err:
            raise CliError(_api_message(err, f"ModelRollout {namespace}/{name}")) from err
        return obj

    def list(self, namespace: str | None, name: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The rollouts (all namespaces when namespace is None) and the list's resourceVersion."""
        kw: dict[str, Any] = {"field_selector": f"metadata.name={name}"} if name else {}
        try:
            if namespace is None:
                got: object = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, **kw)
            else:
                got = self.custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, **kw
                )
        except client.ApiException as err:
            if err.status == 404:  # a list is never "not found", the resource type is
                raise CliError(
                    "the API server does not serve modelrollouts.lossgate.io: install the CRD "
                    "(helm install lossgate helm/lossgate, or kubectl apply -f crds/modelrollout.yaml)"
                ) from err
            raise CliError(_api_message(err, f"ModelRollouts in {namespace or 'all namespaces'}")) from err
        doc = cast(dict[str, Any], got)
        items = sorted(
            doc.get("items", []), key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])
        )
        return items, str(doc.get("metadata", {}).get("resourceVersion", ""))

    def watch(
        self, namespace: str | None, name: str | None, resource_version: str, timeout_s: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) for every change after resource_version, for at most timeout_s."""
        kw: dict[str, Any] = {"resource_version": resource_version, "timeout_seconds": max(1, timeout_s)}
        if name:
            kw["field_selector"] = f"metadata.name={name}"
        if namespace is None:
            stream = typed.watch_events(
                self.custom.list_cluster_custom_object, API_GROUP, API_VERSION, PLURAL, **kw
            )
        else:
            stream = typed.watch_events(
                self.custom.list_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, **kw
            )
        for event in stream:
            yield str(event["type"]), dict(event["object"])

    def annotate(self, namespace: str, name: str, key: str, value: str) -> dict[str, Any]:
        body = {"metadata": {"annotations": {key: value}}}
        try:
            obj = cast(
                dict[str, Any],
                self.custom.patch_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, body
                ),
            )
        except client.ApiException as err:
            raise CliError(_api_message(err, f"ModelRollout {namespace}/{name}")) from err
        return obj


def _api_message(err: client.ApiException, what: str) -> str:
    if err.status == 404:
        return f"{what} not found (is the namespace right? try -n NS or -A)"
    if err.status == 403:
        return f"forbidden: your kubeconfig user may not read or annotate {what}"
    return f"{what}: API server answered {err.status} {err.reason}"
