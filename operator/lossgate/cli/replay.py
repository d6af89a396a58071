"""`lossgate replay`: the judge run offline over historical Prometheus data, look by look.

The loss counters are read exactly as the operator reads them (PrometheusMetrics.loss_intervals at the
analysis interval) and judge.evaluate is called on every prefix of the intervals, so each look is the
verdict the operator's judge would have given at that moment. The whole window is one stratum (one
traffic split): the operator drops the first interval after a weight change; replay has no weight
timeline, so `--weight` only marks the split (and drops the window's first interval, as a rollout
starting at --from would).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml
from rich.table import Table

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.adapters.spec_refs import judge_config, loss_ref
from lossgate.cli import view
from lossgate.cli.get import console_for, print_plain
from lossgate.cli.kubeconn import CliError, UsageError
from lossgate.cli.trail import DECISIVE, Look, first_decision, iso, trail
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.judge import JudgeConfig
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutSpec, parse_duration
from lossgate.ports import LossSeriesRef

_RELATIVE = re.compile(r"^now(?:-([0-9].*))?$")


def decision_line(d: Look, config: JudgeConfig) -> str:
    """The decision with the one-sided bound its test reads (never the two-sided interval): a
    promotion is never printed beside a bound above the margin, nor a rollback beside one below it."""
    if d.verdict == LossVerdict.REGRESSION and d.catastrophic:
        what = (f"ROLL BACK (catastrophic guard: canary rate of losses above 4.6 nats more than "
                f"{config.catastrophic_ratio:g}x the baseline's, p {view.pval(d.p_catastrophic)} <= "
                f"{config.catastrophic_alpha:g})")  # fmt: skip
    elif d.verdict == LossVerdict.REGRESSION:
        level = 100 * (1 - config.alpha_rollback)
        shown = f"one-sided {level:g}% lower bound {d.cs_low:+.4f} > margin {d.margin:.4f}, "
        what = (f"ROLL BACK (regression test: {shown if d.cs_low > d.margin else ''}p(regression) "
                f"{view.pval(d.p_regression)} <= {config.alpha_rollback:g})")  # fmt: skip
    else:
        level = 100 * (1 - config.alpha_promote)
        shown = f"one-sided {level:g}% upper bound {d.cs_high:+.4f} < margin {d.margin:.4f}, "
        what = (f"PROMOTE (non-inferiority test: {shown if d.cs_high < d.margin else ''}p(not worse) "
                f"{view.pval(d.p_not_worse)} <= {config.alpha_promote:g})")  # fmt: skip
    return (f"would {what} at {iso(d.time)} (look {d.look}): delta {d.delta:+.4f} nats, "
            f"{d.n_canary:,.0f} canary / {d.n_baseline:,.0f} baseline samples")  # fmt: skip


def outcome(looks: Sequence[Look], config: JudgeConfig) -> str:
    d = first_decision(looks)
    if d is not None:
        return decision_line(d, config)
    last = looks[-1] if looks else None
    if last is None:
        return "no analysis interval closed in the window"
    reach = "" if last.reachable else (
        f"; at the current estimate ({last.delta:+.4f} nats, near the margin) no sample size decides at "
        f"this split"
    )  # fmt: skip
    return (f"no decision by {iso(last.time)} (look {last.look}): {last.verdict}; about "
            f"{last.samples_needed_if_equal:,} more canary samples would show non-inferiority if the "
            f"arms were equal{reach}")  # fmt: skip


def window_notes(start: datetime, interval: float, weight: int | None) -> list[str]:
    """What the window leaves out, said rather than done silently."""
    first = iso(start + timedelta(seconds=interval))
    notes = [f"the counters at --from ({iso(start)}) are the base: the first look is the interval "
             f"{iso(start)} .. {first}; samples before --from are not counted"]  # fmt: skip
    if weight is not None:
        notes.append(f"--weight {weight}: the first interval ({iso(start)} .. {first}) is dropped, as the "
                     f"operator drops the first interval after a weight change")  # fmt: skip
    return notes


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive = UTC), unix seconds, `now` or `now-2h` (a duration)."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text.strip())
    try:
        if m:
            return now - (parse_duration(m.group(1)) if m.group(1) else timedelta(0))
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text.strip()):
            return datetime.fromtimestamp(float(text), tz=UTC)
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise UsageError(f"bad time {text!r}: use ISO 8601, unix seconds, now or now-2h ({err})") from err
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def interval_arg(text: str) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as err:
        raise UsageError(f"--interval: {err}") from err
    if seconds <= 0:
        raise UsageError(f"--interval {text}: must be longer than 0s, such as 30s")
    return seconds


def plot_arg(path: str | None) -> None:
    """Fail before any reading or judging when the PNG cannot be written where asked."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"--plot {path}: is a directory; give a file name such as {target / 'replay.png'}")
    if not folder.is_dir():
        raise UsageError(f"--plot {path}: directory {folder} does not exist; create it or choose another")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--plot {path}: directory {folder} is not writable")


def load_manifest(path: str) -> dict[str, Any]:
    """The YAML document at `path`: a ModelRollout (kubectl get -o yaml) or its bare spec."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"--spec {path}: {err}") from err
    if not isinstance(doc, dict):
        raise UsageError(f"--spec {path}: not a ModelRollout manifest (a YAML mapping)")
    return doc if "spec" in doc else {"spec": doc}


def load_spec(path: str) -> ModelRolloutSpec:
    doc: Any = load_manifest(path)
    if isinstance(doc, dict) and "spec" in doc:
        doc = doc["spec"]
    try:
        return ModelRolloutSpec.model_validate(doc)
    except ValueError as err:
        raise UsageError(f"--spec {path}: not a valid ModelRollout spec: {err}") from err


def setup(args: argparse.Namespace) -> tuple[str, LossSeriesRef, JudgeConfig, float]:
    """Prometheus address, which series, judge configuration and interval: --spec, then flags."""
    spec = load_spec(args.spec) if args.spec else None
    address = args.prometheus or (spec.analysis.prometheus.address if spec else None)
    if spec is not None:
        ref, config = loss_ref("", spec), judge_config(spec)
        interval = spec.analysis.interval.total_seconds()
    else:
        missing = [f for f in ("model", "baseline", "canary") if not getattr(args, f)]
        if missing:
            raise UsageError(
                f"give --spec, or all of --model, --baseline and --canary (missing --{missing[0]})"
            )
        ref, config, interval = LossSeriesRef("", args.model, args.baseline, args.canary), None, 30.0
    if address is None:
        raise UsageError("give --prometheus URL (or a --spec with analysis.prometheus.address)")
    ref = replace(ref, model=args.model or ref.model, baseline_version=args.baseline or ref.baseline_version,
                  canary_version=args.canary or ref.canary_version)  # fmt: skip
    if args.metric:
        ref = replace(ref, metric=args.metric)
    margins: dict[str, Any] = {}
    if args.margin is not None or args.relative_margin is not None:
        margins = {"margin": args.margin, "relative_margin": args.relative_margin}
    elif config is None:
        margins = {"relative_margin": 0.02}
    over = {k: v for k, v in {
        "alpha_rollback": args.alpha_rollback, "alpha_promote": args.alpha_promote,
        "min_samples_before_rollback": args.min_samples_before_rollback,
        "min_samples_before_promote": args.min_samples_before_promotion,
    }.items() if v is not None} | margins  # fmt: skip
    try:
        config = replace(config, **over) if config is not None else JudgeConfig(**over)
    except ValueError as err:
        raise UsageError(f"judge configuration: {err}") from err
    if args.interval:
        interval = interval_arg(args.interval)
    return address, ref, config, interval


def read_intervals(
    address: str, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float, weight: int | None
) -> list[IntervalStats]:
    metrics = PrometheusMetrics(PrometheusConfig(address))
    try:
        got = metrics.loss_intervals(ref, start, end, interval_s)
    finally:
        metrics.close()
    if isinstance(got, Problem):
        raise CliError(f"Prometheus ({got.kind}): {got.message}")
    return [replace(iv, canary_weight=weight) for iv in got]


def look_table(looks: Sequence[Look]) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("look", "time (UTC)", "n base", "n canary", "delta", "CS", "p(regr.)", "p(not worse)",
                "verdict", "needed if equal"):  # fmt: skip
        t.add_column(col, no_wrap=True, justify="right" if col not in ("time (UTC)", "verdict") else "left")
    for lk in looks:
        t.add_row(
            str(lk.look), iso(lk.time)[:19].replace("T", " "), view.count(lk.n_baseline),
            view.count(lk.n_canary), view.signed(lk.delta), f"[{lk.cs_low:+.4f}, {lk.cs_high:+.4f}]",
            view.pval(lk.p_regression), view.pval(lk.p_not_worse), lk.verdict,
            view.count(lk.samples_needed_if_equal),
            style=view.VERDICT_STYLE.get(lk.verdict, "") if lk.verdict in DECISIVE else "",
        )  # fmt: skip
    return t


def run_replay(args: argparse.Namespace, out: TextIO) -> int:
    plot_arg(args.plot)
    if args.name or args.simulate:
        from lossgate.cli.backtest_cmd import run_simulation

        return run_simulation(args, out)
    if args.from_ is None:
        raise UsageError("give --from T (or a ROLLOUT name, or --simulate with a rollout manifest)")
    start, end = parse_time(args.from_), parse_time(args.to)
    if end <= start:
        raise UsageError(f"--to ({iso(end)}) must be after --from ({iso(start)})")
    address, ref, config, interval = setup(args)
    looks = trail(read_intervals(address, ref, start, end, interval, args.weight), config)
    notes = window_notes(start, interval, args.weight)
    margin = looks[-1].margin if looks else (config.margin or math.nan)
    if args.plot:
        from lossgate.cli.plot import draw

        title = f"{ref.model}: canary {ref.canary_version} vs baseline {ref.baseline_version} (replay)"
        draw(looks, args.plot, title=title, decision=first_decision(looks))
    if args.output == "json":
        doc = {
            "prometheus": address, "model": ref.model, "baseline": ref.baseline_version,
            "canary": ref.canary_version, "from": iso(start), "to": iso(end), "intervalSeconds": interval,
            "config": asdict(config),
            "notes": notes, "looks": [lk.to_json() for lk in looks], "outcome": outcome(looks, config),
            "decision": (d.to_json() if (d := first_decision(looks)) else None),
        }  # fmt: skip
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    console = console_for(out)
    console.print(f"replay {ref.model}: baseline {ref.baseline_version} vs canary {ref.canary_version}, "
                  f"{iso(start)} .. {iso(end)} every {interval:g}s, margin {margin:.4f} nats, "
                  f"alpha rollback {config.alpha_rollback:g} / promote {config.alpha_promote:g}")  # fmt: skip
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True)
    print_plain(console, look_table(looks), out)
    console.print(outcome(looks, config), soft_wrap=True)
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return 0
