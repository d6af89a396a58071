"""What the handlers need, built once at startup and kept in kopf's memo (tests can swap parts)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client, config

from lossgate.adapters.kube import RolloutObjects, typed
from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.adapters.routers import RouteRef, make_router
from lossgate.core.evidence import Problem
from lossgate.model.analysis import PrometheusSource
from lossgate.ports import Clock, MetricsSource, TrafficRouter
from lossgate.reconcile.telemetry import OperatorMetrics


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class OperatorConfig:
    """Operator-wide settings (flags or LOSSGATE_* environment variables)."""

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    max_concurrent_analyses: int = 8
    metrics_port: int = 8090
    training_lookback: timedelta = timedelta(hours=6)
    # Read up to this long before now: a sample still being scraped would otherwise be missed and the
    # last interval change on the next read. About one scrape interval of the Prometheus in use.
    scrape_lag: timedelta = timedelta(seconds=15)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        ns = tuple(n for n in os.environ.get("LOSSGATE_NAMESPACES", "").split(",") if n.strip())
        return cls(
            namespaces=ns,
            max_concurrent_analyses=int(os.environ.get("LOSSGATE_MAX_CONCURRENT_ANALYSES", "8")),
            metrics_port=int(os.environ.get("LOSSGATE_METRICS_PORT", "8090")),
            training_lookback=timedelta(seconds=_env_float("LOSSGATE_TRAINING_LOOKBACK_S", 21600)),
            scrape_lag=timedelta(seconds=_env_float("LOSSGATE_SCRAPE_LAG_S", 15)),
        )


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(
            f"{name}={raw!r} is not a number of seconds; unset it or give e.g. {default}"
        ) from None


def load_api_client() -> client.ApiClient:
    """In-cluster ServiceAccount when running in a pod, else the usual kubeconfig (KUBECONFIG, context)."""
    try:
        typed.load_incluster()
        return client.ApiClient()
    except config.ConfigException:
        return typed.new_client()


@dataclass
class Deps:
    api_client: client.ApiClient
    settings: OperatorConfig = field(default_factory=OperatorConfig)
    clock: Clock = field(default_factory=SystemClock)
    telemetry: OperatorMetrics = field(default_factory=OperatorMetrics)
    _prom: dict[PrometheusConfig, PrometheusMetrics] = field(default_factory=dict)
    _semaphore: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        self.objects = RolloutObjects(self.api_client)
        self._ca_dir = Path(tempfile.mkdtemp(prefix="lossgate-ca-"))

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:  # created lazily: it must belong to kopf's event loop
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrent_analyses)
        return self._semaphore

    def router(self, ref: RouteRef) -> TrafficRouter:
        return make_router(ref, self.api_client)

    def metrics(self, namespace: str, source: PrometheusSource) -> MetricsSource | Problem:
        """A Prometheus client for a rollout's source, with its Secrets resolved (one per distinct config)."""
        token = basic = ca = None
        if source.bearer_token_secret_ref is not None:
            ref = source.bearer_token_secret_ref
            token = self.objects.secret_value(namespace, ref.name, ref.key)
            if isinstance(token, Problem):
                return _secret_problem(token, "bearerTokenSecretRef")
        if source.basic_auth_secret_ref is not None:
            b = source.basic_auth_secret_ref
            user = self.objects.secret_value(namespace, b.name, b.username_key)
            password = self.objects.secret_value(namespace, b.name, b.password_key)
            for v in (user, password):
                if isinstance(v, Problem):
                    return _secret_problem(v, "basicAuthSecretRef")
            basic = (str(user), str(password))
        if source.ca_secret_ref is not None:
            pem = self.objects.secret_value(namespace, source.ca_secret_ref.name, source.ca_secret_ref.key)
            if isinstance(pem, Problem):
                return _secret_problem(pem, "caSecretRef")
            ca = self._ca_file(pem)
        cfg = PrometheusConfig(
            address=source.address,
            bearer_token=token if isinstance(token, str) else None,
            basic_auth=basic,
            ca_bundle=ca,
            insecure_skip_verify=source.insecure_skip_verify,
            timeout_s=source.timeout.total_seconds(),
        )
        if cfg not in self._prom:
            self._prom[cfg] = PrometheusMetrics(cfg)
        return self._prom[cfg]

    def _ca_file(self, pem: str) -> str:
        path = self._ca_dir / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_text(pem)
        return str(path)

    def close(self) -> None:
        for m in self._prom.values():
            m.close()
        typed.close(self.api_client)


def _secret_problem(p: Problem, field_name: str) -> Problem:
    return Problem("Unavailable", f"spec.analysis.prometheus.{field_name}: {p.message}", p.details)
