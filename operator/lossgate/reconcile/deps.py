"""What the handlers need, built once at startup and kept in kopf's memo (tests can swap parts)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client, config

from lossgate.adapters.kube import CanaryPodVersions, RolloutObjects, typed
from lossgate.adapters.notify import Notifications, NotificationSettings, load_settings
from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.adapters.routers import RouteCache, RouteRef, make_router
from lossgate.core.evidence import Problem
from lossgate.model.analysis import PrometheusSource
from lossgate.ports import CanaryPodsRef, Clock, TrafficRouter, VersionSource
from lossgate.reconcile.admission import TickGate
from lossgate.reconcile.batching import LossBatcher
from lossgate.reconcile.limits import EndpointLimiter, LimitedMetrics
from lossgate.reconcile.memory import MallocTrimmer
from lossgate.reconcile.secrets import SecretCache
from lossgate.reconcile.telemetry import OperatorMetrics
from lossgate.reconcile.threads import POOLS
from lossgate.reconcile.wake import Wakeups


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class OperatorConfig:
    """Operator-wide settings (flags or LOSSGATE_* environment variables)."""

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    # Prometheus queries in flight at once per endpoint (address + credentials); see reconcile/limits.py.
    max_concurrent_per_prometheus: int = 4
    # Longest wait for one of those slots; past it that read is Unavailable ("saturated").
    prometheus_queue_timeout: timedelta = timedelta(seconds=20)
    # A whole tick (observe, decide, apply, status write); past it: Reconciled=False, retried.
    tick_timeout: timedelta = timedelta(minutes=2)
    # Prometheus credentials are read again after this long (and at once when Prometheus refuses them).
    secret_refresh: timedelta = timedelta(seconds=60)
    metrics_port: int = 8090
    metrics_address: str = "0.0.0.0"  # noqa: S104 (in a pod the metrics port is scraped from outside)
    # Ticks wake on multiples of this (wall clock), so rollouts due together read Prometheus in one batch.
    tick_quantum_s: float = 1.0
    # Routine ticks running at once (admission.py); a tick someone asked for is always admitted.
    max_concurrent_ticks: int = 128
    # kopf's per-object event workers at once (handlers.py): bounds its PATCHes after a bulk apply.
    kopf_workers: int = 200
    # Threads for the Kubernetes calls of routine ticks (threads.py); urgent ticks have their own.
    kube_threads: int = 16
    # Hand freed heap memory back to the kernel this often (memory.py); 0 turns it off.
    malloc_trim_s: float = 5.0
    training_lookback: timedelta = timedelta(hours=6)
    # Read up to this long before now: a sample still being scraped would otherwise be missed and the
    # last interval change on the next read. About one scrape interval of the Prometheus in use.
    scrape_lag: timedelta = timedelta(seconds=15)
    # Read the label joiner's coverage and delay series each tick (docs/joiner.md): a LabelsTimely
    # condition and a hold on imbalanced label coverage. Off by default: 6 more queries per tick.
    label_checks: bool = False
    # Notification sinks (LOSSGATE_NOTIFICATIONS_FILE, docs/notifications.md); none: nothing is sent.
    notifications: NotificationSettings = field(default_factory=NotificationSettings)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        ns = tuple(n for n in os.environ.get("LOSSGATE_NAMESPACES", "").split(",") if n.strip())
        return cls(
            namespaces=ns,
            max_concurrent_per_prometheus=_env_count("LOSSGATE_MAX_CONCURRENT_PER_PROMETHEUS", 4),
            prometheus_queue_timeout=_seconds("LOSSGATE_PROMETHEUS_QUEUE_TIMEOUT_S", 20),
            tick_timeout=_seconds("LOSSGATE_TICK_TIMEOUT_S", 120),
            secret_refresh=_seconds("LOSSGATE_SECRET_REFRESH_S", 60),
            metrics_port=int(os.environ.get("LOSSGATE_METRICS_PORT", "8090")),
            metrics_address=os.environ.get("LOSSGATE_METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104
            tick_quantum_s=_env_float("LOSSGATE_TICK_QUANTUM_S", 1.0),
            max_concurrent_ticks=_env_count("LOSSGATE_MAX_CONCURRENT_TICKS", 128),
            kopf_workers=_env_count("LOSSGATE_KOPF_WORKERS", 200),
            kube_threads=_env_count("LOSSGATE_KUBE_THREADS", 16),
            malloc_trim_s=_env_float("LOSSGATE_MALLOC_TRIM_S", 5.0),
            training_lookback=_seconds("LOSSGATE_TRAINING_LOOKBACK_S", 21600),
            scrape_lag=_seconds("LOSSGATE_SCRAPE_LAG_S", 15),
            label_checks=os.environ.get("LOSSGATE_LABEL_CHECKS", "").strip().lower() in ("1", "true", "yes"),
            notifications=load_settings(),
        )


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name}={raw!r} is not a whole number >= 1; unset it or give e.g. {default}")
    return int(raw)


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=_env_float(name, default))


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
    wakeups: Wakeups = field(default_factory=Wakeups)
    # The route objects the routers read, fed by the watches in handlers.py (adapters/routers/cache.py).
    routes: RouteCache = field(default_factory=RouteCache)
    _prom: dict[PrometheusConfig, PrometheusMetrics] = field(default_factory=dict)
    _limiters: dict[tuple[str, str], EndpointLimiter] = field(default_factory=dict)
    _batchers: dict[PrometheusConfig, LossBatcher] = field(default_factory=dict)
    # The config each (namespace, source) resolved to last: a rotated token retires the old client.
    _current: dict[tuple[str, str], PrometheusConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.objects = RolloutObjects(self.api_client)
        self.gate = TickGate(self.settings.max_concurrent_ticks)
        self.trimmer = MallocTrimmer(
            self.settings.malloc_trim_s, observe=self.telemetry.malloc_trim_seconds.observe
        )
        self.telemetry.watch_ticks(lambda: self.gate.running, lambda: self.gate.waiting)
        # A lambda, not the bound method: tests swap `objects` for a fake after construction.
        self.secrets = SecretCache(
            lambda ns, name: self.objects.read_secret(ns, name), self.clock, self.settings.secret_refresh
        )
        self._ca_dir: Path | None = None  # made when a CA Secret is first used, removed by close()
        self.notifier = Notifications(self.settings.notifications, record=self.telemetry.notified)

    def router(self, ref: RouteRef) -> TrafficRouter:
        # get_weights() reads the watched copy when there is one; set_weights() always goes to the API.
        return make_router(ref, self.api_client, self.routes)

    async def metrics(self, namespace: str, source: PrometheusSource) -> LimitedMetrics | Problem:
        """A Prometheus client for a rollout's source, with its Secrets resolved (cached) and its
        endpoint's concurrency limit; one PrometheusMetrics per distinct config."""
        creds = await self._credentials(namespace, source)
        if isinstance(creds, Problem):
            return creds
        token, basic, ca, used = creds
        cfg = PrometheusConfig(
            address=source.address,
            bearer_token=token,
            basic_auth=basic,
            ca_bundle=ca,
            insecure_skip_verify=source.insecure_skip_verify,
            timeout_s=source.timeout.total_seconds(),
        )
        if cfg not in self._prom:
            self._prom[cfg] = PrometheusMetrics(cfg)
        old = self._current.get((namespace, source.model_dump_json()))
        self._current[(namespace, source.model_dump_json())] = cfg
        if old is not None and old != cfg:
            self._retire(old)

        def refused() -> None:  # Prometheus refused these credentials: read the Secrets again
            for name in used:
                self.secrets.invalidate(namespace, name)

        limiter = self._limiter(cfg)
        limited = LimitedMetrics(self._prom[cfg], limiter, source.address, refused)
        if cfg not in self._batchers:
            self._batchers[cfg] = LossBatcher(self._prom[cfg], limiter, limited.busy)
        limited.batcher = self._batchers[cfg]
        return limited

    def versions(self, ref: CanaryPodsRef) -> VersionSource:
        """Which version the canary's Ready pods serve (adapters/kube/versions.py)."""
        return CanaryPodVersions(ref, self.api_client)

    async def _credentials(
        self, namespace: str, source: PrometheusSource
    ) -> tuple[str | None, tuple[str, str] | None, str | None, list[str]] | Problem:
        token = ca = None
        basic: tuple[str, str] | None = None
        used: list[str] = []
        if source.bearer_token_secret_ref is not None:
            ref = source.bearer_token_secret_ref
            used.append(ref.name)
            got = await self.secrets.value(namespace, ref.name, ref.key)
            if isinstance(got, Problem):
                return _secret_problem(got, "bearerTokenSecretRef")
            token = got
        if source.basic_auth_secret_ref is not None:
            b = source.basic_auth_secret_ref
            used.append(b.name)
            user = await self.secrets.value(namespace, b.name, b.username_key)
            password = await self.secrets.value(namespace, b.name, b.password_key)
            if isinstance(user, Problem):
                return _secret_problem(user, "basicAuthSecretRef")
            if isinstance(password, Problem):
                return _secret_problem(password, "basicAuthSecretRef")
            basic = (user, password)
        if source.ca_secret_ref is not None:
            c = source.ca_secret_ref
            used.append(c.name)
            pem = await self.secrets.value(namespace, c.name, c.key)
            if isinstance(pem, Problem):
                return _secret_problem(pem, "caSecretRef")
            ca = self._ca_file(pem)
        return token, basic, ca, used

    def _limiter(self, cfg: PrometheusConfig) -> EndpointLimiter:
        key = _endpoint(cfg)
        if key not in self._limiters:
            s = self.settings
            self._limiters[key] = EndpointLimiter(
                cfg.address, s.max_concurrent_per_prometheus, s.prometheus_queue_timeout.total_seconds()
            )
        return self._limiters[key]

    def _retire(self, cfg: PrometheusConfig) -> None:
        """Forget a config no source uses any more (its token was rotated, its address edited).
        Calls in flight keep their client alive until they return; its sessions close with it."""
        if cfg in self._current.values():
            return
        self._prom.pop(cfg, None)
        self._batchers.pop(cfg, None)
        key = _endpoint(cfg)
        if all(_endpoint(c) != key for c in self._current.values()) and key in self._limiters:
            self._limiters.pop(key).retire()

    def _ca_file(self, pem: str) -> str:
        if self._ca_dir is None:
            self._ca_dir = Path(tempfile.mkdtemp(prefix="lossgate-ca-"))
        path = self._ca_dir / f"{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not path.exists():
            path.write_text(pem)
        return str(path)

    def start(self) -> None:
        """What runs beside the handlers: the Kubernetes thread pool's size, the heap trimmer."""
        POOLS.configure(self.settings.kube_threads)
        self.trimmer.start()
        self.notifier.start()

    def close(self) -> None:
        self.trimmer.stop()
        self.notifier.close()
        POOLS.close()
        if self._ca_dir is not None:
            shutil.rmtree(self._ca_dir, ignore_errors=True)
        for limiter in self._limiters.values():
            limiter.close()
        for m in self._prom.values():
            m.close()
        typed.close(self.api_client)


def _endpoint(cfg: PrometheusConfig) -> tuple[str, str]:
    """One limit per server and identity: tenants of one multi-tenant gateway do not share slots."""
    secret = repr((cfg.bearer_token, cfg.basic_auth)).encode()
    return cfg.address.rstrip("/"), hashlib.sha256(secret).hexdigest()[:16]


def _secret_problem(p: Problem, field_name: str) -> Problem:
    return Problem("Unavailable", f"spec.analysis.prometheus.{field_name}: {p.message}", p.details)
