"""Kubernetes side of the scale benchmark: manifests, bulk creation, and list+watch caches that
timestamp every change as it arrives (status staleness, spec-edit and rollback latencies)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

MR = ("lossgate.io", "v1alpha1", "modelrollouts")
GW = ("gateway.networking.k8s.io", "v1", "httproutes")


def model_name(i: int) -> str:
    return f"m{i:05d}"  # as _scale_exporter.model_name


def rollout_name(i: int) -> str:
    return f"r{i:05d}"


def route_name(i: int) -> str:
    return f"route-{i:05d}"


def services(i: int) -> tuple[str, str]:
    return f"{model_name(i)}-v1", f"{model_name(i)}-v2"


def route_manifest(i: int, canary_weight: int = 0) -> dict[str, Any]:
    base, canary = services(i)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": route_name(i)},
        "spec": {
            "parentRefs": [{"name": "bench-gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": base, "port": 8080, "weight": 100 - canary_weight},
                        {"name": canary, "port": 8080, "weight": canary_weight},
                    ]
                }
            ],
        },
    }


def rollout_manifest(
    i: int,
    model_index: int,
    prometheus_url: str,
    interval_s: float,
    margin: float,
    training_run: str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Long steps (minDuration 1h), so a rollout stays Progressing for the whole measurement."""
    base, canary = services(model_index)
    canary_ref: dict[str, Any] = {"version": "v2", "service": canary}
    if training_run:
        canary_ref["trainingRun"] = training_run
    loss: dict[str, Any] = {"margin": margin}
    if metric:
        loss["metric"] = metric
    spec: dict[str, Any] = {
        "model": model_name(model_index),
        "baseline": {"version": "v1", "service": base},
        "canary": canary_ref,
        "trafficRouting": {"gatewayAPI": {"httpRoute": route_name(i)}},
        "steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}],
        "stepDefaults": {"minSamples": 1000, "minDuration": "1h"},
        "analysis": {
            "interval": f"{interval_s:g}s",
            "prometheus": {"address": prometheus_url, "timeout": "10s"},
            "loss": loss,
            "gradientHealth": {"warmupSteps": 50},
            "onMetricsUnavailable": {"action": "Hold", "after": "10m"},
        },
    }
    return {
        "apiVersion": "lossgate.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": rollout_name(i)},
        "spec": spec,
    }


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def finished_status(i: int, promoted: bool, now: datetime) -> dict[str, Any]:
    """A realistic terminal status (a few history entries, every condition), as the operator writes it."""
    start = now - timedelta(days=2, minutes=i % 600)
    steps = [(start, 10), (start + timedelta(hours=1), 50)]
    end = start + timedelta(hours=2)
    weight = 100 if promoted else 0
    phase = "Promoted" if promoted else "RolledBack"
    reason = "PromotedNoRegression" if promoted else "LossRegression"
    msg = "step 2/3: canary loss 0.301 vs 0.300 (+0.001, 94% CS [-0.004, 0.010]), 6120/8000 samples; " + (
        "promoted" if promoted else "rolled back: regression beyond margin 0.05"
    )

    def hist(t: datetime, decision: str, why: str, ph: str, step: int, w: int) -> dict[str, Any]:
        return {
            "time": ts(t),
            "decision": decision,
            "reason": why,
            "phase": ph,
            "stepIndex": step,
            "canaryWeight": w,
            "verdict": "Undecided",
            "delta": 0.001,
            "csLow": -0.004,
            "csHigh": 0.01,
            "nBaseline": 54000.0,
            "nCanary": 6120.0,
            "message": msg,
        }

    def cond(type_: str, status: str, why: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "reason": why,
            "message": msg[:120],
            "lastTransitionTime": ts(end),
            "observedGeneration": 1,
        }

    return {
        "phase": phase,
        "observedGeneration": 1,
        "stepIndex": 1,
        "currentStep": "2/3",
        "canaryWeight": weight,
        "baselineVersion": "v1",
        "canaryVersion": "v2",
        "message": msg,
        "startedAt": ts(start),
        "stepStartedAt": ts(steps[-1][0]),
        "stepPaused": "0s",
        "analysis": {
            "verdict": "Undecided",
            "baseline": {"n": 54000.0, "mean": 0.3},
            "canary": {"n": 6120.0, "mean": 0.301},
            "delta": 0.001,
            "csLow": -0.004,
            "csHigh": 0.01,
            "csLevel": 0.94,
            "margin": 0.05,
            "samplesInStep": 6120.0,
            "reason": "",
            "updatedAt": ts(end),
        },
        "conditions": [
            cond("Progressing", "False", reason),
            cond("MetricsAvailable", "True", "MetricsOK"),
            cond("TrainingHealthy", "Unknown", "HealthGateDisabled"),
            cond("Promoted", "True" if promoted else "False", reason if promoted else "NotPromoted"),
            cond("RolledBack", "False" if promoted else "True", "NotRolledBack" if promoted else reason),
            cond("SpecValid", "True", "SpecOK"),
            cond("RouterReady", "True", "RouterOK"),
        ],
        "history": [
            hist(start, "start", "Started", "Progressing", 0, 10),
            hist(steps[1][0], "advance", "StepAdvanced", "Progressing", 1, 50),
            hist(end, "promote" if promoted else "rollback", reason, phase, 1, weight),
        ],
        "stepStarts": [{"at": ts(t), "weight": w} for t, w in steps],
    }


def create_namespace(core: client.CoreV1Api, name: str) -> None:
    with contextlib.suppress(ApiException):
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=30
        )


def bulk(fn: Callable[[Any], object], items: Iterable[Any], threads: int = 8) -> float:
    """Run fn over items on a thread pool (first error re-raised); returns seconds taken."""
    t0 = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for _ in pool.map(fn, items):
            pass
    finally:  # on an error or Ctrl-C, drop what has not started (each call has its own timeout)
        pool.shutdown(wait=True, cancel_futures=True)
    return time.monotonic() - t0


def ignore_conflict(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ApiException as err:
        if err.status != 409:
            raise


@dataclass
class Change:
    t: float  # time.time() when the event arrived here
    info: dict[str, Any]  # what `extract` kept of the object (whole objects would cost GBs at N=1000)


@dataclass
class Watcher:
    """A list+watch cache of one custom resource in one namespace, in a daemon thread. What
    `extract` keeps of every ADDED/MODIFIED object is kept per name with its arrival time."""

    api_client: client.ApiClient
    namespace: str
    resource: tuple[str, str, str]
    extract: Callable[[dict[str, Any]], dict[str, Any]]
    keep: int = 400  # changes kept per object
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, list[Change]] = field(default_factory=dict)
    events: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.resource[2]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # a daemon thread: it ends at its stream's next event or timeout

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.latest)

    def history(self, name: str) -> list[Change]:
        with self._lock:
            return list(self.changes.get(name, []))

    def _record(self, obj: dict[str, Any], t: float) -> None:
        name = obj["metadata"]["name"]
        info = self.extract(obj)
        with self._lock:
            self.latest[name] = info
            ch = self.changes.setdefault(name, [])
            ch.append(Change(t, info))
            if len(ch) > self.keep:
                del ch[: len(ch) - self.keep]
            self.events += 1

    def _run(self) -> None:
        custom = client.CustomObjectsApi(self.api_client)
        group, version, plural = self.resource
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    got = custom.list_namespaced_custom_object(
                        group, version, self.namespace, plural, _request_timeout=60
                    )
                    t = time.time()
                    for obj in got.get("items", []):
                        self._record(obj, t)
                    rv = got["metadata"]["resourceVersion"]
                w = watch.Watch()
                stream = w.stream(
                    custom.list_namespaced_custom_object,
                    group,
                    version,
                    self.namespace,
                    plural,
                    resource_version=rv,
                    timeout_seconds=20,
                    allow_watch_bookmarks=True,
                    _request_timeout=40,
                )
                for ev in stream:
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        rv = ""  # 410 Gone: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj, time.time())
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as err:
                if err.status == 410:
                    rv = ""
                    continue
                self.errors.append(f"{type(err).__name__}: {err.status} {err.reason}"[:300])
                self._stop.wait(1.0)
            except Exception as err:
                self.errors.append(f"{type(err).__name__}: {err}"[:300])
                self._stop.wait(1.0)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def status_time(obj: dict[str, Any]) -> float | None:
    """The newest time the operator wrote for the rollout's analysis: status.analysis.updatedAt."""
    st = obj.get("status") or {}
    return parse_time((st.get("analysis") or {}).get("updatedAt"))


def evidence_time(obj: dict[str, Any]) -> float | None:
    """Where the judged evidence ends, when the status keeps the judge's state (judgeState.throughMs)."""
    st = (obj.get("status") or {}).get("judgeState") or {}
    ms = st.get("throughMs")
    return ms / 1000 if isinstance(ms, int | float) else None


def abort_time(obj: dict[str, Any]) -> float | None:
    """The time of the history entry that recorded the abort (tick start, when the decision was made)."""
    for h in reversed((obj.get("status") or {}).get("history") or []):
        if h.get("reason") == "Aborted":
            return parse_time(h.get("time"))
    return None


def rollout_info(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": (obj.get("status") or {}).get("phase"),
        "updated": status_time(obj),
        "evidence": evidence_time(obj),
        "aborted_at": abort_time(obj),
    }


def route_info(obj: dict[str, Any]) -> dict[str, Any]:
    refs = ((obj.get("spec") or {}).get("rules") or [{}])[0].get("backendRefs") or []
    return {"weights": {r.get("name"): int(r.get("weight", 1)) for r in refs}}
