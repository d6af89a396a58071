"""Client-side cost of one analysis tick of a rollout that started `--age-s` ago, in process.

Run by bench/scale.py as a subprocess, with PYTHONPATH=<operator checkout>/operator, so the same
harness measures the code of any checkout. Prometheus (a real one, backfilled with the model's
history) is another process, so time.process_time() here is the operator side only: the adapter's
queries and parsing, the judge and decide(). Prints one JSON object.

If the operator's tick API changes, adapt `one_tick` (and `build`) only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


class FixedRouter:
    """The route as the operator left it: no API server needed for this measurement."""

    def __init__(self, canary: int) -> None:
        from lossgate.core.evidence import Weights

        self.weights = Weights(baseline=100 - canary, canary=canary)

    def get_weights(self) -> Any:
        return self.weights

    def set_weights(self, weights: Any) -> Any:
        self.weights = weights
        return weights


def ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def build(args: argparse.Namespace, now: datetime) -> tuple[Any, Any]:
    """The rollout's spec and a status that says it started `age` before `now` (step 2 at half its age)."""
    from lossgate.model import ModelRolloutSpec, ModelRolloutStatus

    raw = json.loads(args.spec)
    raw["stepDefaults"] = {**raw.get("stepDefaults", {}), "minDuration": "72h"}  # stays in step 2
    spec = ModelRolloutSpec.model_validate(raw)
    age = timedelta(seconds=args.age_s)
    start, step2 = now - age, now - age / 2
    status = ModelRolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "observedGeneration": 1,
            "stepIndex": 1,
            "currentStep": "2/3",
            "canaryWeight": 50,
            "baselineVersion": spec.baseline.version,
            "canaryVersion": spec.canary.version,
            "startedAt": ts(start),
            "stepStartedAt": ts(step2),
            "stepStarts": [{"at": ts(start), "weight": 10}, {"at": ts(step2), "weight": 50}],
        }
    )
    return spec, status


def one_tick(
    spec: Any, status: Any, metrics: Any, router: Any, now: datetime, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """One tick without the API server: read (router, loss adapter), judge, decide(). Returns the
    times and the status the operator would write. Follows whichever tick API the checkout has."""
    from lossgate.adapters.spec_refs import loss_ref
    from lossgate.core.machine import decide
    from lossgate.reconcile import observe as obs_mod

    if hasattr(obs_mod, "gather"):  # read only what closed since the judge's state in status
        from lossgate.adapters.spec_refs import health_config, judge_config
        from lossgate.core.step import judge_tick, plan_loss_read

        w0, c0 = time.perf_counter(), time.process_time()
        series, config = loss_ref(args.namespace, spec), judge_config(spec)
        plan = plan_loss_read(spec, status, config, series)
        got = asyncio.run(
            obs_mod.gather(
                spec=spec,
                status=status,
                generation=1,
                annotations={},
                router=router,
                metrics=metrics,
                loss_ref=series,
                plan=plan,
                now=now,
                training_lookback=timedelta(hours=6),
                scrape_lag=timedelta(seconds=args.scrape_lag_s),
            )
        )
        judged = judge_tick(spec, status, plan, got, config, health_config(spec))
        observation, metrics_problem = judged.observation, judged.metrics_problem
        w1, c1 = time.perf_counter(), time.process_time()
        decision = decide(spec, status, observation, now)
        try:
            from lossgate.reconcile.rollout import _judge_state

            state = _judge_state(decision, judged)
        except ImportError:
            state = judged.judge_state
        new_status = decision.status.model_copy(update={"judge_state": state})
    else:  # the whole history since the rollout's start, every tick
        w0, c0 = time.perf_counter(), time.process_time()
        observed = asyncio.run(
            obs_mod.observe(
                spec=spec,
                status=status,
                generation=1,
                annotations={},
                router=router,
                metrics=metrics,
                loss_ref=loss_ref(args.namespace, spec),
                now=now,
                training_lookback=timedelta(hours=6),
                scrape_lag=timedelta(seconds=args.scrape_lag_s),
            )
        )
        observation, metrics_problem = observed.observation, observed.metrics_problem
        w1, c1 = time.perf_counter(), time.process_time()
        decision = decide(spec, status, observation, now)
        new_status = decision.status
    w2, c2 = time.perf_counter(), time.process_time()
    loss = observation.loss
    return {
        "observe_wall_s": w1 - w0,
        "observe_cpu_s": c1 - c0,
        "decide_wall_s": w2 - w1,
        "decide_cpu_s": c2 - c1,
        "verdict": getattr(getattr(loss, "verdict", None), "value", None),
        "n_baseline": getattr(loss, "n_baseline", None),
        "n_canary": getattr(loss, "n_canary", None),
        "metrics_problem": getattr(metrics_problem, "message", None),
        "decision": getattr(getattr(decision, "kind", None), "value", None),
        "phase": str(getattr(new_status, "phase", "")),
    }, new_status


def prom_cpu_s(pid: int) -> float:
    """utime + stime of Prometheus (0 without a pid)."""
    if not pid:
        return 0.0
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def roundtrip(status: Any) -> tuple[Any, int, float]:
    """The status as the next tick reads it back from the API server (JSON), its size, and the
    CPU seconds of writing and reading it."""
    c0 = time.process_time()
    doc = json.dumps(status.model_dump(mode="json", by_alias=True))
    back = type(status).model_validate(json.loads(doc))
    return back, len(doc), time.process_time() - c0


def count_queries(metrics: Any) -> dict[str, int]:
    """Wrap the Prometheus client's query methods to count the HTTP queries of a tick."""
    counts = {"instant": 0, "range": 0}
    client = getattr(metrics, "client", None)
    for kind in counts:
        fn = getattr(client, kind, None)
        if fn is None:
            continue

        def wrapped(*a: Any, _fn: Any = fn, _kind: str = kind, **kw: Any) -> Any:
            counts[_kind] += 1
            return _fn(*a, **kw)

        setattr(client, kind, wrapped)
    return counts


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--prom", required=True)
    p.add_argument("--spec", required=True, help="the ModelRollout spec as JSON")
    p.add_argument("--age-s", type=float, required=True, help="age of the rollout at the first tick")
    p.add_argument("--at", type=float, required=True, help="unix time of the last tick (data reaches it)")
    p.add_argument("--repeats", type=int, default=3, help="warm ticks after the first")
    p.add_argument("--namespace", default="bench")
    p.add_argument("--scrape-lag-s", type=float, default=15.0)
    p.add_argument("--prom-pid", type=int, default=0, help="to read Prometheus' CPU time per tick")
    args = p.parse_args()

    import lossgate
    from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics

    metrics = PrometheusMetrics(PrometheusConfig(address=args.prom, timeout_s=120.0))
    counts = count_queries(metrics)
    interval = json.loads(args.spec)["analysis"]["interval"]
    interval_s = float(interval.rstrip("s"))
    times = [args.at - (args.repeats - j) * interval_s for j in range(args.repeats + 1)]

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    # Warm-up (imports, connections, Prometheus' caches): one throw-away first tick.
    spec, status = build(args, at(times[0]))
    one_tick(spec, status, metrics, FixedRouter(status.canary_weight), at(times[0]), args)
    runs = []
    for t in times:  # the first from a status without judge state, then one more interval per tick
        before, prom0 = dict(counts), prom_cpu_s(args.prom_pid)
        r, status = one_tick(spec, status, metrics, FixedRouter(status.canary_weight), at(t), args)
        r["prometheus_cpu_s"] = prom_cpu_s(args.prom_pid) - prom0
        status, size, codec_cpu = roundtrip(status)
        r |= {
            "queries": {k: counts[k] - before[k] for k in counts},
            "status_bytes": size,
            "status_codec_cpu_s": codec_cpu,
        }
        runs.append(r)
    metrics.close()
    warm = runs[1:] or runs

    def med(key: str, rs: list[dict[str, Any]]) -> float:
        return float(statistics.median(r[key] for r in rs))

    out = {
        "lossgate_file": lossgate.__file__,
        "age_s": args.age_s,
        "repeats": len(warm),
        "first_tick": runs[0],
        "first_tick_cpu_s": runs[0]["observe_cpu_s"] + runs[0]["decide_cpu_s"],
        "first_tick_wall_s": runs[0]["observe_wall_s"] + runs[0]["decide_wall_s"],
        "observe_cpu_s_median": med("observe_cpu_s", warm),
        "observe_wall_s_median": med("observe_wall_s", warm),
        "decide_cpu_s_median": med("decide_cpu_s", warm),
        "tick_cpu_s_median": float(statistics.median(r["observe_cpu_s"] + r["decide_cpu_s"] for r in warm)),
        "tick_wall_s_median": float(
            statistics.median(r["observe_wall_s"] + r["decide_wall_s"] for r in warm)
        ),
        "prometheus_cpu_s_median": med("prometheus_cpu_s", warm),
        "status_bytes": warm[-1]["status_bytes"],
        "status_codec_cpu_s_median": med("status_codec_cpu_s", warm),
        "queries_per_tick": warm[-1]["queries"],
        "last": warm[-1],
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
