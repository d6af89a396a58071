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
from lossgate.cli.kubeconn import CliError
from lossgate.cli.trail import DECISIVE, Look, first_decision, iso, trail
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.judge import JudgeConfig
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutSpec, parse_duration
from lossgate.ports import LossSeriesRef

_RELATIVE = re.compile(r"^now(?:-([0-9].*))?$")


def outcome(looks: Sequence[Look]) -> str:
    d = first_decision(looks)
    if d is None:
        last = looks[-1] if looks else None
        if last is None:
            return "no analysis interval closed in the window"
        return (f"no decision by {iso(last.time)} (look {last.look}): {last.verdict}, about "
                f"{last.samples_needed:,} more canary samples needed")  # fmt: skip
    what = "ROLL BACK (regression)" if d.verdict == LossVerdict.REGRESSION else "PROMOTE (not worse shown)"
    return (f"would {what} at {iso(d.time)} (look {d.look}): delta {d.delta:+.4f} nats, CS "
            f"[{d.cs_low:+.4f}, {d.cs_high:+.4f}], margin {d.margin:.4f}, {d.n_canary:,.0f} canary / "
            f"{d.n_baseline:,.0f} baseline samples")  # fmt: skip


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
        raise CliError(f"bad time {text!r}: use ISO 8601, unix seconds, now or now-2h ({err})") from err
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def load_spec(path: str) -> ModelRolloutSpec:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"--spec {path}: {err}") from err
    if isinstance(doc, dict) and "spec" in doc:
        doc = doc["spec"]
    try:
        return ModelRolloutSpec.model_validate(doc)
    except ValueError as err:
        raise CliError(f"--spec {path}: not a valid ModelRollout spec: {err}") from err


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
            raise CliError("give --spec, or all of --model, --baseline and --canary")
        ref, config, interval = LossSeriesRef("", args.model, args.baseline, args.canary), None, 30.0
    if address is None:
        raise CliError("give --prometheus URL (or a --spec with analysis.prometheus.address)")
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
        raise CliError(f"judge configuration: {err}") from err
    if args.interval:
        interval = parse_duration(args.interval).total_seconds()
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
                "verdict", "needed"):  # fmt: skip
        t.add_column(col, no_wrap=True, justify="right" if col not in ("time (UTC)", "verdict") else "left")
    for lk in looks:
        t.add_row(
            str(lk.look), iso(lk.time)[:19].replace("T", " "), view.count(lk.n_baseline),
            view.count(lk.n_canary), view.signed(lk.delta), f"[{lk.cs_low:+.4f}, {lk.cs_high:+.4f}]",
            view.pval(lk.p_regression), view.pval(lk.p_not_worse), lk.verdict, view.count(lk.samples_needed),
            style=view.VERDICT_STYLE.get(lk.verdict, "") if lk.verdict in DECISIVE else "",
        )  # fmt: skip
    return t


def run_replay(args: argparse.Namespace, out: TextIO) -> int:
    address, ref, config, interval = setup(args)
    start, end = parse_time(args.from_), parse_time(args.to)
    if end <= start:
        raise CliError(f"--to ({iso(end)}) must be after --from ({iso(start)})")
    looks = trail(read_intervals(address, ref, start, end, interval, args.weight), config)
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
            "looks": [lk.to_json() for lk in looks], "outcome": outcome(looks),
            "decision": (d.to_json() if (d := first_decision(looks)) else None),
        }  # fmt: skip
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    console = console_for(out)
    console.print(f"replay {ref.model}: baseline {ref.baseline_version} vs canary {ref.canary_version}, "
                  f"{iso(start)} .. {iso(end)} every {interval:g}s, margin {margin:.4f} nats, "
                  f"alpha rollback {config.alpha_rollback:g} / promote {config.alpha_promote:g}")  # fmt: skip
    print_plain(console, look_table(looks), out)
    console.print(outcome(looks))
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return 0
