"""One demo/e2e scenario: a namespace with a baseline and a canary model server, their Services,
an HTTPRoute, the canary's backfilled training run, a traffic driver, and the ModelRollout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lossgate_dev.demo.driver import TrafficDriver
from lossgate_dev.demo.models import traffic
from lossgate_dev.demo.stack import Stack

EXPECTED = {
    "good": "Promoted", "bad": "RolledBack", "nonfinite": "Failed", "slow": "RolledBack",
    "classbad": "RolledBack",
}  # fmt: skip
# The `slow` scenario's guardrails: requests slower than 50 ms (the baseline answers in about 1 ms)
# may be at most 5 points more frequent, and server errors at most 2 points.
GUARDRAILS = [
    {"name": "latency-50ms", "latency": {"thresholdSeconds": 0.05}, "margin": 0.05},
    {"name": "errors", "errorRate": {}, "margin": 0.02},
]
# The `classbad` scenario: every digit is a class of the loss, judged on its own once it has 40
# labelled canary samples; the first step lasts long enough for digit 7 (10% of traffic) to get them.
PER_CLASS = {"enabled": True, "minSamplesPerClass": 40, "maxClasses": 10, "relativeMargin": 0.05}


@dataclass
class Scenario:
    name: str  # also the namespace, the model label, the route and the rollout name
    canary_variant: str  # good | bad | slow | classbad
    nan_at: int | None = None  # the canary's training run diverges at this step
    rate: float = 60.0  # requests per second through the driver
    driver: TrafficDriver | None = field(default=None, repr=False)

    @property
    def run(self) -> str:
        return f"{self.name}-train-v2"

    @property
    def baseline_service(self) -> str:
        return f"{self.name}-v1"

    @property
    def canary_service(self) -> str:
        return f"{self.name}-v2"

    def prepare(self, stack: Stack, namespace: str | None = None) -> str:
        """Model servers, Services and the HTTPRoute (baseline 100%, canary 0%). Returns the namespace."""
        ns = stack.namespace(namespace or self.name)
        base = stack.start_model(self.name, "v1", "baseline", self.baseline_service)
        canary = stack.start_model(self.name, "v2", self.canary_variant, self.canary_service)
        for svc in (self.baseline_service, self.canary_service):
            stack.create_service(ns, svc)
        stack.create_route(ns, self.name, self.baseline_service, self.canary_service)
        self.driver = TrafficDriver(
            stack.api, ns, self.name, {base.service: base.url, canary.service: canary.url}, traffic(),
            rate=self.rate, label_delay_s=1.0, labels_url=stack.joiner.url if stack.joiner else None,
            send_class=self.canary_variant == "classbad",
        )  # fmt: skip
        return ns

    def manifest(self, prometheus_url: str, **overrides: Any) -> dict[str, Any]:
        """A fast but honest rollout: 2 s analysis interval, small quotas, 5% relative margin."""
        spec: dict[str, Any] = {
            "model": self.name,
            "baseline": {"version": "v1", "service": self.baseline_service},
            "canary": {"version": "v2", "service": self.canary_service, "trainingRun": self.run},
            "trafficRouting": {"gatewayAPI": {"httpRoute": self.name}},
            "steps": [{"weight": 10}, {"weight": 25}, {"weight": 50}, {"weight": 100}],
            "stepDefaults": {"minSamples": 150, "minDuration": "6s"},
            "analysis": {
                "interval": "2s",
                "prometheus": {"address": prometheus_url, "timeout": "5s"},
                "loss": {
                    "relativeMargin": 0.05,
                    "minSamplesBeforeRollback": 150,
                    "minSamplesBeforePromotion": 600,
                },
                "gradientHealth": {"warmupSteps": 50},
                "onMetricsUnavailable": {"action": "Hold", "after": "60s"},
                # Report both arms' ECE, MCE and Brier score (status.calibration); no gate.
                "calibration": {},
            },
        }
        if self.canary_variant == "slow":
            spec["analysis"]["guardrails"] = GUARDRAILS
        if self.canary_variant == "classbad":
            spec["analysis"]["loss"]["perClass"] = PER_CLASS
            spec["stepDefaults"] = {"minSamples": 20_000, "minDuration": "6s"}  # stay on the first step
        for key, value in overrides.items():
            spec[key] = value
        return {
            "apiVersion": "lossgate.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": self.name},
            "spec": spec,
        }
