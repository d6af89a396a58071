"""`lossgate operator`: run the kopf operator with lossgate's handlers."""

from __future__ import annotations

import os

import kopf


def run(
    namespaces: list[str],
    *,
    liveness: str | None = "http://0.0.0.0:8080/healthz",
    peering: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Cluster-wide when no namespace is given. Peering (for HA replicas) needs kopf's peering CRDs."""
    if metrics_port is not None:
        os.environ["LOSSGATE_METRICS_PORT"] = str(metrics_port)
    if namespaces:
        os.environ["LOSSGATE_NAMESPACES"] = ",".join(namespaces)
    import lossgate.reconcile.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=os.environ.get("LOSSGATE_LOG_LEVEL", "").upper() == "DEBUG")

    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        liveness_endpoint=liveness,
    )
