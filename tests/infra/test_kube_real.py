"""The control-plane fixture is a real Kubernetes: schema + CEL validation, status subresource,
optimistic concurrency, controllers and RBAC all behave as in a cluster (a fake would fail these)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from lossgate_dev.devenv.binaries import versions
from lossgate_dev.devenv.procs import wait_until
from tests.infra.kube_fixtures import Kube

GROUP, VERSION, PLURAL = "probe.lossgate.io", "v1", "widgets"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.low < self.high",
                                        "message": "spec.low must be below spec.high",
                                    }
                                ],
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widget_crd(kube: Kube) -> None:
    ext = client.ApiextensionsV1Api(kube.api_client)
    ext.create_custom_resource_definition(CRD)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_until(established, 30, "CRD established")


def widget(name: str, low: int, high: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"low": low, "high": high},
    }


def test_server_reports_the_built_version(kube: Kube) -> None:
    # Given binaries built from k8s.io/kubernetes with version ldflags; Then /version says so
    v = kube.plane.version()
    assert v["gitVersion"] == versions()["K8S_VERSION"]
    assert v["major"] == "1"
    assert v["minor"] == versions()["K8S_VERSION"].split(".")[1]


def test_cel_rule_refuses_bad_object_with_its_message(kube: Kube, widget_crd: None, namespace: str) -> None:
    api = client.CustomObjectsApi(kube.api_client)
    # When an object breaks the CEL rule
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("bad", 5, 1))
    # Then the API server refuses it with the rule's message and the field path
    assert err.value.status == 422
    assert "spec.low must be below spec.high" in err.value.body


def test_status_subresource_and_optimistic_concurrency(kube: Kube, widget_crd: None, namespace: str) -> None:
    api = client.CustomObjectsApi(kube.api_client)
    # Given a valid object
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("ok", 1, 5))
    # When status is patched through the subresource
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "ok", {"status": {"phase": "Ready"}}
    )
    # Then status is stored and spec is untouched, and a spec change through /status is ignored
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "ok", {"spec": {"high": 9}})
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ok")
    assert got["status"] == {"phase": "Ready"}
    assert got["spec"] == {"low": 1, "high": 5}
    # And a write carrying the stale resourceVersion gets 409 Conflict
    stale = dict(created, spec={"low": 1, "high": 7})
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ok", stale)
    assert err.value.status == 409


def test_controller_manager_creates_replicasets(kube: Kube, namespace: str) -> None:
    apps = client.AppsV1Api(kube.api_client)
    labels = {"app": "probe"}
    # Given a Deployment of 2 replicas
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="probe"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="c", image="registry.invalid/none:1")]
                    ),
                ),
            ),
        ),
    )

    # Then kube-controller-manager's deployment controller makes a ReplicaSet owned by it, with 2 replicas
    def replicaset() -> bool:
        items = apps.list_namespaced_replica_set(namespace).items
        return len(items) == 1 and items[0].spec.replicas == 2

    wait_until(replicaset, 60, "ReplicaSet from the deployment controller")
    (rs,) = apps.list_namespaced_replica_set(namespace).items
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.owner_references[0].name == "probe"


def test_rbac_forbids_a_token_without_permissions(kube: Kube, namespace: str) -> None:
    # Given a user authenticated by token but bound to no role
    nobody = kube.client_for_token(kube.plane.tokens["nobody"])
    # When it lists ConfigMaps
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(nobody).list_namespaced_config_map(namespace)
    # Then RBAC answers 403 naming the user
    assert err.value.status == 403
    assert json.loads(err.value.body)["reason"] == "Forbidden"
    assert 'User "nobody" cannot list resource "configmaps"' in json.loads(err.value.body)["message"]
    # And once a Role and RoleBinding grant it, the same call succeeds
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "cm-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "User", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    wait_until(
        lambda: client.CoreV1Api(nobody).list_namespaced_config_map(namespace) is not None, 10, "grant"
    )
    nobody.close()
