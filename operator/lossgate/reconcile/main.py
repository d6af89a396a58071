"""`lossgate operator`: run the kopf operator with lossgate's handlers."""

from __future__ import annotations

import os
import secrets

import kopf


def peering_priority() -> int:
    """kopf pauses every operator of a peering when two have the same priority, so replicas of one
    Deployment (same flags) must differ: LOSSGATE_PEERING_PRIORITY, else a random one per process.
    The highest live priority handles the rollouts; the others stand by until it is gone."""
    raw = os.environ.get("LOSSGATE_PEERING_PRIORITY", "").strip()
    try:
        return int(raw) if raw else 1 + secrets.randbelow(2**31 - 2)
    except ValueError:
        raise SystemExit(f"LOSSGATE_PEERING_PRIORITY={raw!r} is not an integer") from None


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
    from lossgate.reconcile.memory import limit_arenas

    limit_arenas()  # before kopf and the handlers start their threads

    kopf.configure(verbose=os.environ.get("LOSSGATE_LOG_LEVEL", "").upper() == "DEBUG")

    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=peering_priority() if peering is not None else None,
        liveness_endpoint=liveness,
    )
