"""Kubernetes writes the reconciler needs besides traffic routing: status, annotations, secrets, scale;
and one read, the version the canary's pods serve."""

from lossgate.adapters.kube.objects import RolloutObjects, classify_api_error
from lossgate.adapters.kube.versions import CanaryPodVersions

__all__ = ["CanaryPodVersions", "RolloutObjects", "classify_api_error"]
