"""Root conftest: registers the real-server fixtures for the whole suite."""

pytest_plugins = ["tests.infra.kube_fixtures", "tests.infra.prom_fixtures"]
