"""Kubernetes writes the reconciler needs besides traffic routing: status, annotations, secrets, scale."""

from lossgate.adapters.kube.objects import RolloutObjects, classify_api_error

__all__ = ["RolloutObjects", "classify_api_error"]
