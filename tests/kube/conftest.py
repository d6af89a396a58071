"""Clients shared by the router tests: the admin's, and a second one standing for another controller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client

from tests.infra.kube_fixtures import Kube


@pytest.fixture
def objs(kube: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


@pytest.fixture
def other(kube: Kube) -> Iterator[client.CustomObjectsApi]:
    """A second, independent client (its own connection pool) standing for another controller."""
    api = kube.client_for_token(kube.plane.admin_token)
    yield client.CustomObjectsApi(api)
    cast(Any, api).close()
