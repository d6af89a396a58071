"""`lossgate replay ROLLOUT` and `lossgate replay --spec rollout.yaml --simulate`: the whole rollout
backtested (core.backtest: the operator's judge_tick and decide() on a virtual clock) over the loss
intervals in Prometheus.

Two sources of history:
- a real past rollout: its spec and status (from the API server, or a manifest saved with
  `kubectl get -o yaml` that has status.stepStarts). The clock starts at status.stepStarts[0] and is
  also woken at every recorded decision, as the operator was; the replayed decisions are compared
  with status.history.
- an A/B history recorded at a fixed split (a manifest without status, `--from`): each simulated
  step sees the recorded intervals thinned to its split (docs/cli.md says what this can and cannot
  tell).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, TypeVar

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.adapters.spec_refs import judge_config, loss_ref
from lossgate.cli.kubeconn import CliError, UsageError
from lossgate.cli.trail import iso
from lossgate.core.backtest import MOVES, Backtest, Tick, backtest
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.paired import PairedStats
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, parse_duration
from lossgate.model.status import HISTORY_LIMIT

T = TypeVar("T")


def recorded_moves(status: ModelRolloutStatus) -> list[dict[str, Any]]:
    """The decisions that moved traffic, as status.history recorded them."""
    return [
        {"time": iso(h.time), "kind": h.decision, "reason": h.reason, "step": h.step_index + 1}
        for h in status.history
        if h.decision in {k.value for k in MOVES}
    ]


def replayed_moves(bt: Backtest) -> list[dict[str, Any]]:
    return [{"time": iso(t.time), "kind": t.kind, "reason": t.reason, "step": t.step} for t in bt.moves]


def compare(
    replayed: list[dict[str, Any]], recorded: list[dict[str, Any]], tolerance: timedelta
) -> list[str]:
    """Where the replay differs from the operator: decision, reason, step, or a time further apart
    than `tolerance`. Empty: the same decisions."""
    out = []
    for k in range(max(len(replayed), len(recorded))):
        a = replayed[k] if k < len(replayed) else None
        b = recorded[k] if k < len(recorded) else None
        if a is None or b is None:
            out.append(f"decision {k + 1}: replay {_move(a)}, operator {_move(b)}")
            continue
        if (a["kind"], a["reason"], a["step"]) != (b["kind"], b["reason"], b["step"]):
            out.append(f"decision {k + 1}: replay {_move(a)}, operator {_move(b)}")
        elif abs(_t(a["time"]) - _t(b["time"])) > tolerance:
            out.append(f"decision {k + 1} ({a['kind']}): replay at {a['time']}, operator at {b['time']}")
    return out


def comparable(
    replayed: list[dict[str, Any]], recorded: list[dict[str, Any]], tolerance: timedelta
) -> list[dict[str, Any]]:
    """The replayed moves status.history can still be compared with: it keeps only the last
    HISTORY_LIMIT decisions, so when its oldest kept move is not the start, the replay's moves before
    that one (less the tolerance) have nothing left to compare with."""
    if not recorded or recorded[0]["kind"] == "Start":
        return replayed
    since = _t(recorded[0]["time"]) - tolerance
    return [m for m in replayed if _t(m["time"]) >= since]


def _move(m: dict[str, Any] | None) -> str:
    return "none" if m is None else f"{m['kind']} ({m['reason']}, step {m['step']}) at {m['time']}"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ungated(spec: ModelRolloutSpec) -> ModelRolloutSpec:
    """The spec without the training-health gate: the training run is not replayed."""
    if spec.canary.training_run is None:
        return spec
    return spec.model_copy(update={"canary": spec.canary.model_copy(update={"training_run": None})})


def read(
    address: str, namespace: str, spec: ModelRolloutSpec, start: datetime, end: datetime
) -> list[IntervalStats]:
    got = _query(address, lambda m: m.loss_intervals(
        loss_ref(namespace, spec), start, end, spec.analysis.interval.total_seconds()
    ))  # fmt: skip
    if isinstance(got, Problem):
        raise CliError(f"Prometheus at {address} ({got.kind}): {got.message}")
    return got


def read_paired(
    address: str, namespace: str, spec: ModelRolloutSpec, start: datetime, end: datetime, notes: list[str]
) -> list[PairedStats] | None:
    """The paired intervals a shadow step is judged on (None without a shadow step, or none recorded)."""
    if spec.shadow is None:
        return None
    got = _query(address, lambda m: m.paired_intervals(
        loss_ref(namespace, spec), start, end, spec.analysis.interval.total_seconds()
    ))  # fmt: skip
    if isinstance(got, Problem):
        notes.append(f"no paired history ({got.kind}: {got.message}): the shadow step waits at weight 0")
        return None
    return got


def measured_split(intervals: list[IntervalStats]) -> float:
    nb = sum(iv.baseline.n for iv in intervals)
    nc = sum(iv.canary.n for iv in intervals)
    if nb <= 0 or nc <= 0:
        raise CliError("the history has no labelled samples on one arm: no split to reweight from")
    return nc / (nb + nc)


@dataclass(frozen=True)
class History:
    """What a backtest runs over: the intervals read once, where the clock starts and stops."""

    mode: str  # "rollout" (a past rollout's timeline) or "fixed-split" (an A/B history)
    address: str
    origin: datetime
    end: datetime
    lag: timedelta
    wakeups: tuple[datetime, ...]
    split: float | None
    intervals: list[IntervalStats]
    notes: list[str]
    paired: list[PairedStats] | None = None  # a shadow step's paired intervals on the same grid


def prepare(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus | None,
    namespace: str,
    args: argparse.Namespace,
    now: datetime,
) -> History:
    from lossgate.cli.replay import parse_time

    address = args.prometheus or spec.analysis.prometheus.address
    lag = _lag(args.scrape_lag)
    interval = spec.analysis.interval
    notes = []
    if spec.canary.training_run is not None:
        notes.append("the training-health gate is not replayed (a warning would have doubled the quotas)")
    if status is not None and status.step_starts:
        origin = status.step_starts[0].at
        last = status.history[-1].time if status.history else now
        end = min(now, last + 2 * interval) if status.terminal else now
        if args.to != "now":
            end = parse_time(args.to, now)
        wakeups = tuple(h.time for h in status.history if h.time > origin)
        intervals = read(address, namespace, spec, origin, end)
        paired = read_paired(address, namespace, spec, origin, end, notes)
        return History("rollout", address, origin, end, lag, wakeups, None, intervals, notes, paired)
    if args.from_ is None:
        raise UsageError("--simulate over an A/B history needs --from (or a rollout with status.stepStarts)")
    origin, end = parse_time(args.from_, now), parse_time(args.to, now)
    if end <= origin:
        raise UsageError(f"--to ({iso(end)}) must be after --from ({iso(origin)})")
    intervals = read(address, namespace, spec, origin, end)
    split = args.split if args.split is not None else measured_split(intervals)
    if not 0 < split < 1:
        raise UsageError(f"--split {split}: the canary's fraction of the recorded traffic, in (0, 1)")
    notes.append(
        f"A/B history at a fixed split ({100 * split:.1f}% canary): each step sees it thinned to its own "
        "split; times to reach sample quotas are those of the recorded traffic"
    )
    paired = read_paired(address, namespace, spec, origin, end, notes)
    return History("fixed-split", address, origin, end, lag, (), split, intervals, notes, paired)


def run_history(spec: ModelRolloutSpec, config: JudgeConfig, h: History) -> Backtest:
    return backtest(ungated(spec), config, h.intervals, h.origin, h.end, scrape_lag=h.lag, wakeups=h.wakeups,
                    recorded_split=h.split, paired=h.paired)  # fmt: skip


def simulate(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus | None,
    namespace: str,
    args: argparse.Namespace,
    now: datetime,
) -> dict[str, Any]:
    """Run the backtest and build the report (the JSON document; the table prints from it)."""
    h = prepare(spec, status, namespace, args, now)
    bt = run_history(spec, judge_config(spec), h)
    if args.plot:
        from lossgate.cli.backtest_plot import draw_backtest

        draw_backtest(spec, judge_config(spec), h, bt, args.plot)
    interval = spec.analysis.interval
    doc: dict[str, Any] = {
        "mode": h.mode, "prometheus": h.address, "origin": iso(h.origin), "end": iso(h.end),
        "intervalSeconds": interval.total_seconds(), "scrapeLagSeconds": h.lag.total_seconds(),
        "recordedSplit": h.split, "notes": h.notes,
        "moves": replayed_moves(bt), "ticks": [_tick_json(t) for t in bt.ticks],
        "outcome": _outcome(bt, h.end),
    }  # fmt: skip
    if h.mode == "rollout" and status is not None:
        rec = recorded_moves(status)
        mine = comparable(doc["moves"], rec, interval + h.lag)
        if len(mine) < len(doc["moves"]):
            doc["notes"].append(f"status.history keeps the last {HISTORY_LIMIT} decisions: compared from "
                                f"{rec[0]['time']}, the oldest kept")  # fmt: skip
        diffs = compare(mine, rec, interval + h.lag)
        doc |= {"recorded": rec, "matches": not diffs, "differences": diffs}
    return doc


def _lag(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise UsageError(f"--scrape-lag: {err}") from err


def _tick_json(t: Tick) -> dict[str, Any]:
    return asdict(t) | {"time": iso(t.time)}


def _outcome(bt: Backtest, end: datetime) -> str:
    last = bt.ticks[-1] if bt.ticks else None
    if last is None:
        return "no tick ran"
    start = bt.ticks[0].time
    took = f"{(last.time - start).total_seconds() / 60:.1f} min after the start"
    if bt.outcome is not None:
        return (
            f"{last.kind} ({last.reason}) at {iso(last.time)}, {took}, step {last.step}, "
            f"{last.n_canary:,.0f} canary samples judged"
        )
    return f"no decision by {iso(end)}: {last.phase} at step {last.step} ({last.weight}%): {last.message}"


def print_report(doc: dict[str, Any], out: TextIO) -> None:
    for note in doc["notes"]:
        out.write(f"note: {note}\n")
    out.write(f"{'time (UTC)':<21} {'decision':<9} {'reason':<24} step\n")
    for m in doc["moves"]:
        out.write(f"{m['time']:<21} {m['kind']:<9} {m['reason']:<24} {m['step']}\n")
    out.write(f"replay: {doc['outcome']}\n")
    if "recorded" in doc:
        if doc["matches"]:
            out.write(
                f"the operator took the same {len(doc['recorded'])} decisions (times within one interval "
                f"and the scrape lag)\n"
            )
        for d in doc["differences"]:
            out.write(f"differs: {d}\n")


def run_simulation(args: argparse.Namespace, out: TextIO) -> int:
    now = datetime.now(UTC)
    if args.name:
        from lossgate.adapters.kube import typed
        from lossgate.cli.kubeconn import Rollouts, connect

        api, default_ns = connect(args.kubeconfig, args.context)
        try:
            namespace = args.namespace or default_ns
            obj = Rollouts(api).get(namespace, args.name)
        finally:
            typed.close(api)
        where = f"ModelRollout {namespace}/{args.name}"
    else:
        if not args.spec:
            raise UsageError("--simulate needs --spec rollout.yaml (or give a ROLLOUT name)")
        from lossgate.cli.replay import load_manifest

        obj = load_manifest(args.spec)
        namespace = args.namespace or (obj.get("metadata") or {}).get("namespace") or ""
        where = f"--spec {args.spec}"
    try:
        spec = ModelRolloutSpec.model_validate(obj.get("spec") or {})
        raw = {k: v for k, v in (obj.get("status") or {}).items() if k != "kopf"}
        status = ModelRolloutStatus.model_validate(raw) if raw else None
    except ValueError as err:
        raise CliError(f"{where} cannot be read: {err}") from err
    if args.name and (status is None or not status.step_starts):
        raise CliError(f"{where} has not moved traffic yet (no status.stepStarts): nothing to replay")
    if args.sweep_margin or args.sweep_alpha:
        from lossgate.cli.sweep import run_sweep

        return run_sweep(spec, prepare(spec, status, namespace, args, now), args, out)
    doc = simulate(spec, status, namespace, args, now)
    if args.output == "json":
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        print_report(doc, out)
    return 0


def _query(address: str, read: Callable[[PrometheusMetrics], T]) -> T:
    """One read through a client made for it and closed after."""
    metrics = PrometheusMetrics(PrometheusConfig(address))
    try:
        return read(metrics)
    finally:
        metrics.close()
