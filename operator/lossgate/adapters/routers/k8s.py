"""A thin JSON view of the Kubernetes API for the routers: GET and PATCH raw objects by path.

Raw JSON (not the generated models) so a JSON patch `test` op compares against exactly what the
server stored, defaults and omitted fields included.
"""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "lossgate"
# (connect, read) seconds on every Kubernetes call the operator makes (routers, RolloutObjects, pod
# versions): a hung API server is Unavailable, not a stuck reconcile. The one place this value lives.
REQUEST_TIMEOUT = (5.0, 15.0)

JsonObj = dict[str, Any]
PatchOp = dict[str, Any]


class KubeJson:
    """GET / PATCH of one object path (e.g. `/apis/apps/v1/namespaces/ns/deployments/web/scale`).

    Raises `kubernetes.client.ApiException` on non-2xx answers and urllib3 errors on transport
    failures; the routers classify both into a `Problem`.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client

    def get(self, path: str) -> JsonObj:
        return self._call("GET", path, None, None)

    def json_patch(self, path: str, ops: list[PatchOp]) -> JsonObj:
        return self._call("PATCH", path, ops, JSON_PATCH)

    def merge_patch(self, path: str, body: JsonObj) -> JsonObj:
        return self._call("PATCH", path, body, MERGE_PATCH)

    def _call(self, method: str, path: str, body: Any, content_type: str | None) -> JsonObj:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        query = [("fieldManager", FIELD_MANAGER)] if method == "PATCH" else None
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        cast(Any, resp).read()  # loads the body; untyped in the client
        data = self.api.response_deserialize(resp, {"200": "object", "201": "object"}).data
        if not isinstance(data, dict):
            raise TypeError(f"{method} {path}: expected a JSON object, got {type(data).__name__}")
        return data


def object_path(group: str, version: str, namespace: str, plural: str, name: str) -> str:
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}"


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path segments, escaping `~` and `/` in keys."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
