"""tests/helm reuses the closed-loop fixtures (the operator as a process, Prometheus, models)."""

from tests.e2e.conftest import launch, lossgate_crd, stack  # noqa: F401  (fixtures)
