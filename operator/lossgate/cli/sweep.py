"""`lossgate replay --simulate --sweep-margin ... --sweep-alpha ...`: the same history backtested once per
(margin, alphas) setting, so a margin can be picked from one's own data: for each, the decision, its
reason, the minutes and the canary samples it took. A table or JSON, and a plot (--plot)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from typing import Any, TextIO

from lossgate.adapters.spec_refs import judge_config
from lossgate.cli.backtest_cmd import History, run_history
from lossgate.cli.kubeconn import CliError, UsageError
from lossgate.cli.trail import iso
from lossgate.core.judge_types import JudgeConfig
from lossgate.model import ModelRolloutSpec


@dataclass(frozen=True)
class Setting:
    margin: float | None  # nats; None: the spec's
    alpha_rollback: float | None
    alpha_promote: float | None


@dataclass(frozen=True)
class Outcome:
    margin: float  # as the judge resolved it at the last look (nats)
    alpha_rollback: float
    alpha_promote: float
    decision: str  # Promote | Rollback | none
    reason: str
    minutes: float | None  # from the start to the decision
    canary_samples: float  # judged when it decided (or at the end)
    final_step: int


def parse_list(flag: str, text: str | None) -> list[float]:
    if not text:
        return []
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UsageError(f"{flag} {text}: give comma-separated numbers, such as 0.005,0.01,0.02") from err
    if not values or any(not v > 0 for v in values):
        raise UsageError(f"{flag} {text}: every value must be > 0")
    return values


def parse_alphas(text: str | None) -> list[tuple[float, float] | None]:
    """`0.01,0.05` (each for both tests) or `0.01/0.05,0.005/0.02` (rollback/promote pairs)."""
    if not text:
        return [None]
    out: list[tuple[float, float] | None] = []
    for part in text.split(","):
        r, _, p = part.strip().partition("/")
        try:
            pair = (float(r), float(p or r))
        except ValueError as err:
            raise UsageError(
                f"--sweep-alpha {text}: give ALPHA or ROLLBACK/PROMOTE, comma-separated"
            ) from err
        out.append(pair)
    return out


def settings(args: argparse.Namespace) -> list[Setting]:
    margins: list[float | None] = list(parse_list("--sweep-margin", args.sweep_margin)) or [None]
    return [
        Setting(m, a[0] if a else None, a[1] if a else None)
        for a in parse_alphas(args.sweep_alpha)
        for m in margins
    ]


def configured(base: JudgeConfig, s: Setting) -> JudgeConfig:
    over: dict[str, Any] = {}
    if s.margin is not None:
        over |= {"margin": s.margin, "relative_margin": None}
    if s.alpha_rollback is not None and s.alpha_promote is not None:
        over |= {"alpha_rollback": s.alpha_rollback, "alpha_promote": s.alpha_promote}
    try:
        return replace(base, **over)
    except ValueError as err:
        raise UsageError(f"--sweep setting {s}: {err}") from err


def sweep(spec: ModelRolloutSpec, h: History, args: argparse.Namespace) -> list[Outcome]:
    base, out = judge_config(spec), []
    for s in settings(args):
        config = configured(base, s)
        bt = run_history(spec, config, h)
        end, first = bt.outcome, bt.ticks[0] if bt.ticks else None
        last = bt.ticks[-1] if bt.ticks else None
        if first is None or last is None:
            raise CliError("the backtest ran no tick: no history in the window")
        minutes = (end.time - first.time).total_seconds() / 60 if end is not None else None
        margin = last.margin if last.margin is not None else (config.margin or 0.0)
        out.append(Outcome(margin, config.alpha_rollback, config.alpha_promote, end.kind if end else "none",
                           end.reason if end else f"no decision by {iso(h.end)}", minutes, last.n_canary,
                           last.step))  # fmt: skip
    return out


def run_sweep(spec: ModelRolloutSpec, h: History, args: argparse.Namespace, out: TextIO) -> int:
    results = sweep(spec, h, args)
    if args.plot:
        draw_sweep(
            results, args.plot, f"{spec.model}: {spec.canary.version} vs {spec.baseline.version} ({h.mode})"
        )
    if args.output == "json":
        doc = {"mode": h.mode, "origin": iso(h.origin), "end": iso(h.end), "notes": h.notes,
               "settings": [r.__dict__ for r in results]}  # fmt: skip
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    for note in h.notes:
        out.write(f"note: {note}\n")
    out.write(
        f"{'margin':>8} {'alpha rb/pr':>12} {'decision':<9} {'reason':<22} {'minutes':>8} {'canary n':>9}\n"
    )
    for r in results:
        took = f"{r.minutes:.1f}" if r.minutes is not None else "-"
        out.write(f"{r.margin:>8.4f} {f'{r.alpha_rollback:g}/{r.alpha_promote:g}':>12} {r.decision:<9} "
                  f"{r.reason:<22} {took:>8} {r.canary_samples:>9,.0f}\n")  # fmt: skip
    if args.plot:
        out.write(f"plot written to {args.plot}\n")
    return 0


def draw_sweep(results: list[Outcome], path: str, title: str) -> None:
    """Minutes and canary samples to decide against the margin, one line per alpha pair; the marker's
    colour is the decision (green promote, red rollback, grey none by the end of the history)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = {"Promote": "tab:green", "Rollback": "tab:red"}
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    pairs = sorted({(r.alpha_rollback, r.alpha_promote) for r in results})
    for style, pair in zip(("-", "--", ":", "-."), pairs, strict=False):
        rows = sorted(
            (r for r in results if (r.alpha_rollback, r.alpha_promote) == pair), key=lambda r: r.margin
        )
        label = f"alpha {pair[0]:g} rollback / {pair[1]:g} promote"
        x = [r.margin for r in rows]
        ax.plot(x, [r.minutes if r.minutes is not None else float("nan") for r in rows], style, color="grey",
                label=label)  # fmt: skip
        ax2.plot(x, [r.canary_samples for r in rows], style, color="grey")
        for r in rows:
            c = colour.get(r.decision, "lightgrey")
            y = r.minutes if r.minutes is not None else 0.0
            ax.plot([r.margin], [y], "o" if r.minutes is not None else "x", color=c, markersize=8)
            ax2.plot([r.margin], [r.canary_samples], "o", color=c, markersize=6)
    for word, c in (
        ("promote", "tab:green"),
        ("roll back", "tab:red"),
        ("no decision (x at 0)", "lightgrey"),
    ):
        ax.plot([], [], "o", color=c, label=word)
    ax.set_ylabel("minutes to decide")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_ylabel("canary samples judged")
    ax2.set_xlabel("margin (nats)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
