"""What `lossgate get` draws: rich renderables built from ModelRollout objects as the API returns them
(plain dicts, so an object the CLI's version does not fully know still shows)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

PHASE_STYLE = {
    "Pending": "yellow",
    "Progressing": "cyan",
    "Paused": "magenta",
    "Watching": "green",  # promoted, in the post-promotion watch
    "Promoted": "bold green",
    "RolledBack": "bold red",
    "Failed": "bold red",
}
VERDICT_STYLE = {"Regression": "red", "NotWorse": "green", "Undecided": "yellow", "InsufficientData": "dim"}
HISTORY_ROWS = 8


def num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{float(x):.{digits}f}"


def signed(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{float(x):+.{digits}f}"


def pval(x: Any) -> str:
    if x is None:
        return "-"
    p = float(x)
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def count(x: Any) -> str:
    return "-" if x is None else f"{round(float(x)):,}"


def cs(a: dict[str, Any]) -> str:
    if a.get("csLow") is None or a.get("csHigh") is None:
        return "-"
    level = a.get("csLevel")
    pct = f"{100 * float(level):.0f}% " if level is not None else ""
    return f"{pct}[{signed(a['csLow'])}, {signed(a['csHigh'])}]"


def age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def step_of(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    steps = (obj.get("spec") or {}).get("steps") or []
    return str(st.get("currentStep") or f"{int(st.get('stepIndex', 0)) + (1 if st.get('startedAt') else 0)}"
               f"/{len(steps)}")  # fmt: skip


def phase_text(phase: str) -> Text:
    return Text(phase, style=PHASE_STYLE.get(phase, ""))


def table(objs: list[dict[str, Any]], now: datetime | None = None) -> Table:
    """One row per rollout (what `lossgate get` and `lossgate get -A` show)."""
    now = now or datetime.now(UTC)
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT", "N BASE/CANARY", "DELTA", "CS",
                "VERDICT", "HEALTH", "AGE"):  # fmt: skip
        t.add_column(col, no_wrap=col in ("NAME", "PHASE", "STEP", "WEIGHT", "VERDICT"))
    for obj in objs:
        st, meta = obj.get("status") or {}, obj["metadata"]
        a = st.get("analysis") or {}
        verdict = str(a.get("verdict", "-"))
        t.add_row(
            meta.get("namespace", ""),
            meta["name"],
            phase_text(str(st.get("phase", "Pending"))),
            step_of(obj),
            f"{st.get('canaryWeight', 0)}%",
            f"{count((a.get('baseline') or {}).get('n'))}/{count((a.get('canary') or {}).get('n'))}",
            signed(a.get("delta")),
            cs(a).split(" ", 1)[-1],
            Text(verdict, style=VERDICT_STYLE.get(verdict, "")),
            str((st.get("trainingHealth") or {}).get("verdict", "-")),
            age(meta.get("creationTimestamp"), now),
        )
    return t


def detail(obj: dict[str, Any], now: datetime | None = None) -> RenderableType:
    """Everything about one rollout: header, analysis, training health, conditions, last decisions."""
    now = now or datetime.now(UTC)
    spec, st, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    a, th = st.get("analysis") or {}, st.get("trainingHealth") or {}
    w = int(st.get("canaryWeight", 0))
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Name", f"{meta.get('namespace', '')}/{meta['name']}")
    base, can = (
        (spec.get("baseline") or {}).get("version", "-"),
        (spec.get("canary") or {}).get("version", "-"),
    )
    head.add_row("Model", f"{spec.get('model', '-')}: baseline {base} -> canary {can}")
    head.add_row("Phase", phase_text(str(st.get("phase", "Pending"))))
    weights = " ".join(_step_label(s) for s in spec.get("steps") or [])
    head.add_row("Step", f"{step_of(obj)}  (weights {weights})")
    head.add_row("Weights", f"baseline {100 - w}%  canary {w}%")
    if st.get("mirrorPercent"):
        head.add_row("Mirror", f"{st['mirrorPercent']}% of the baseline's requests mirrored to the canary")
    head.add_row("Message", Text(str(st.get("message", "")), overflow="fold"))
    parts: list[RenderableType] = [head, Text("")]

    if a:
        verdict = str(a.get("verdict", "-"))
        b, c = a.get("baseline") or {}, a.get("canary") or {}
        head.add_row("Verdict", Text(verdict, style=VERDICT_STYLE.get(verdict, "")))
        head.add_row("Samples", f"baseline {count(b.get('n'))} (mean loss {num(b.get('mean'))})   canary "
                                f"{count(c.get('n'))} (mean loss {num(c.get('mean'))})   "
                                f"{count(a.get('samplesInStep'))} canary in this step")  # fmt: skip
        head.add_row("Delta", f"{signed(a.get('delta'))} nats (canary - baseline), CS {cs(a)}, "
                              f"margin {num(a.get('margin'))}")  # fmt: skip
        head.add_row("P-values", f"regression {pval(a.get('pRegression'))}   not worse "
                                 f"{pval(a.get('pNotWorse'))}   (always valid)")  # fmt: skip
        head.add_row("Needed", f"{count(a.get('samplesNeeded'))} more canary samples (judge's estimate)")
    p = st.get("paired") or {}
    if p:
        d = signed(p.get("delta"))
        head.add_row("Paired", f"{p.get('verdict', '-')}: d {d} nats (canary - baseline on the same "
                               f"requests), CS {cs(p)}, margin {num(p.get('margin'))}, "
                               f"{count(p.get('n'))} pairs")  # fmt: skip
        head.add_row("Paired-p", f"regression {pval(p.get('pRegression'))} (alpha {num(p.get('alpha'))})   "
                                 f"not worse {pval(p.get('pNotWorse'))}")  # fmt: skip
    _calibration_row(head, st.get("calibration") or {})
    if th:
        line = (f"{th.get('verdict', '-')}  non-finite steps {th.get('nonFiniteSteps', 0)}, "
                f"grad-norm spikes {th.get('gradNormSpikes', 0)}, rank divergence "
                f"{num(th.get('rankDivergence'), 3)}")  # fmt: skip
        reasons = "; ".join(th.get("reasons") or [])
        head.add_row("Training", Text(line + (f" ({reasons})" if reasons else "")))
    checks = checks_table(st.get("checks") or [])
    if checks is not None:
        parts += [checks, Text("")]
    conds = st.get("conditions") or []
    if conds:
        ct = Table(title="Conditions", title_justify="left", box=None, header_style="bold", pad_edge=False)
        for col in ("type", "status", "reason", "age", "message"):
            ct.add_column(col, no_wrap=col != "message", overflow="fold")
        for c in conds:
            ct.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                       age(c.get("lastTransitionTime"), now), c.get("message", ""))  # fmt: skip
        parts += [ct, Text("")]
    hist = (st.get("history") or [])[-HISTORY_ROWS:]
    if hist:
        ht = Table(title=f"Last decisions ({len(hist)} of {len(st.get('history') or [])})",
                   title_justify="left", box=None, header_style="bold", pad_edge=False)  # fmt: skip
        for col in ("time", "decision", "reason", "step", "weight", "n b/c", "delta", "CS", "verdict"):
            ht.add_column(col, no_wrap=True)
        steps = len(spec.get("steps") or [])
        for h in reversed(hist):
            ht.add_row(
                str(h.get("time", ""))[11:19] or "-",
                h.get("decision", ""),
                h.get("reason", ""),
                f"{int(h.get('stepIndex', 0)) + 1}/{steps}",
                f"{h.get('canaryWeight', 0)}%",
                f"{count(h.get('nBaseline'))}/{count(h.get('nCanary'))}",
                signed(h.get("delta")),
                f"[{signed(h.get('csLow'))}, {signed(h.get('csHigh'))}]"
                if h.get("csLow") is not None
                else "-",
                str(h.get("verdict") or "-"),
            )
        parts.append(ht)
    return Group(*parts)


def checks_table(checks: list[dict[str, Any]]) -> Table | None:
    """One row per guardrail or class: samples, delta, interval, p-values, verdict (unjudged: dim)."""
    if not checks:
        return None
    t = Table(title="Checks", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for col in ("check", "kind", "n b/c", "baseline", "canary", "delta", "CS", "margin", "p reg",
                "p nw", "alpha", "verdict"):  # fmt: skip
        t.add_column(col, no_wrap=True)
    for c in checks:
        verdict = str(c.get("verdict", "-"))
        judged = c.get("judged", True)
        shown = (
            Text(verdict, style=VERDICT_STYLE.get(verdict, "")) if judged else Text(f"{verdict} (unjudged)")
        )
        t.add_row(
            str(c.get("name", "")), str(c.get("kind", "")),
            f"{count(c.get('nBaseline'))}/{count(c.get('nCanary'))}",
            _mean(c, "meanBaseline"), _mean(c, "meanCanary"), signed(c.get("delta")), cs(c),
            num(c.get("margin")), pval(c.get("pRegression")), pval(c.get("pNotWorse")),
            num(c.get("alpha"), 5), shown, style=None if judged else "dim",
        )  # fmt: skip
    return t


def _calibration_row(head: Table, cal: dict[str, Any]) -> None:
    """Both arms' ECE, MCE and mean Brier score (status.calibration), when reported."""

    def arm(a: dict[str, Any]) -> str:
        ece, mce, brier = num(a.get("ece")), num(a.get("mce")), num(a.get("brier"))
        acc, conf = num(a.get("accuracy"), 3), num(a.get("confidence"), 3)
        return f"ECE {ece} MCE {mce} Brier {brier} acc {acc} conf {conf} (n {count(a.get('n'))})"

    if cal:
        b, c = cal.get("baseline") or {}, cal.get("canary") or {}
        line = f"baseline {arm(b)}   canary {arm(c)}   ({cal.get('bins', '-')} bins)"
        head.add_row("Calibration", Text(line, overflow="fold"))


def _mean(c: dict[str, Any], key: str) -> str:
    """An arm's mean; for the loss per token (nats) also its perplexity, exp of it."""
    x = c.get(key)
    if c.get("kind") == "tokenLoss" and isinstance(x, int | float) and 0 <= x < 50:
        return f"{num(x)} (ppl {math.exp(x):.4g})"
    return num(x)


def fingerprint(obj: dict[str, Any]) -> tuple[str, str]:
    """What a redraw depends on: the object's identity and its status/spec version."""
    meta = obj["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}", str(meta.get("resourceVersion", ""))


def _step_label(step: dict[str, Any]) -> str:
    shadow = step.get("shadow")
    return f"shadow({shadow.get('mirrorPercent')}%)" if isinstance(shadow, dict) else str(step.get("weight"))
