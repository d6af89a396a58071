"""`lossgate-demo` / `make demo`: real rollouts on a local control plane, start to summary.

Five scenarios run side by side, each in its own namespace with its own pair of model servers:
  good       a canary that really is better (less regularised) -> Promoted
  bad        a canary trained on 30% noisy labels               -> RolledBack, with the numbers
  nonfinite  a canary whose training run went NaN               -> Failed before any traffic moves
  slow       the better model answering 60 ms slower            -> RolledBack by the latency guardrail
  classbad   better on the pool, much worse on digit 7           -> RolledBack by the per-class judge
Exit code 0 only when every scenario ends as expected.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from lossgate_dev.demo.scenario import EXPECTED, Scenario
from lossgate_dev.demo.stack import Stack
from lossgate_dev.devenv.binaries import cache_root
from lossgate_dev.devenv.kube import ControlPlane
from lossgate_dev.devenv.prom import Prometheus

SCENARIOS = {
    "good": Scenario("digits-good", "good"),
    "bad": Scenario("digits-bad", "bad"),
    "nonfinite": Scenario("digits-nonfinite", "good", nan_at=300),
    "slow": Scenario("digits-slow", "slow"),
    "classbad": Scenario("digits-classbad", "classbad", rate=150.0),
}
TIMEOUT_S = 420.0


def _fmt(x: Any, spec: str = "+.3f") -> str:
    return "-" if x is None else format(x, spec)


def _row(key: str, sc: Scenario, obj: dict[str, Any]) -> list[str]:
    st = obj.get("status") or {}
    a = st.get("analysis") or {}
    cs = f"[{_fmt(a.get('csLow'))}, {_fmt(a.get('csHigh'))}]" if a.get("csLow") is not None else "-"
    n = f"{(a.get('baseline') or {}).get('n', 0):.0f}/{(a.get('canary') or {}).get('n', 0):.0f}"
    health = (st.get("trainingHealth") or {}).get("verdict", "-")
    return [key, st.get("phase", "Pending"), st.get("currentStep") or "-", f"{st.get('canaryWeight', 0)}%", n,
            _fmt(a.get("delta")), cs, a.get("verdict", "-"), health]  # fmt: skip


def _table(rows: list[list[str]]) -> Table:
    t = Table(title="lossgate demo: ModelRollouts (live)", expand=False)
    for col in ("scenario", "phase", "step", "canary", "n base/canary", "delta (nats)", "CS", "verdict",
                "training"):  # fmt: skip
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    return t


def main(keys: list[str], keep: bool = False) -> int:
    console = Console() if Console().is_terminal else Console(width=160)
    say = console.print
    workdir = cache_root() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"==> demo workdir {workdir}")
    say("==> starting the local control plane (etcd, kube-apiserver, kube-controller-manager) ...")
    plane = ControlPlane.start(workdir / "kube")
    say(f"    Kubernetes {plane.version()['gitVersion']} at {plane.server_url}")
    say(f"    KUBECONFIG={plane.kubeconfig}")
    prom = Prometheus.start(workdir / "prometheus", scrape_interval="1s")
    say(f"==> Prometheus {prom.url} (scrape every 1s)")
    stack = Stack(plane, prom, workdir / "stack")
    chosen = {k: SCENARIOS[k] for k in keys}
    try:
        say("==> installing the ModelRollout CRD and the Gateway API CRDs (from their Go module) ...")
        stack.install_crds()
        joiner = stack.start_joiner()
        say(f"==> label joiner {joiner.url} (lossgate joiner, SQLite): model servers log predictions to it")
        say("==> training and serving the demo models (scikit-learn digits; real cross-entropy) ...")
        for sc in chosen.values():
            sc.prepare(stack)
        say("==> canary training runs (2 data-parallel ranks), history loaded into Prometheus ...")
        stack.backfill_training({sc.run: sc.nan_at for sc in chosen.values()})
        for sc in chosen.values():
            if sc.driver is None:
                raise RuntimeError(f"scenario {sc.name}: no traffic driver was set up")
            sc.driver.start()
        stack.start_operator([sc.name for sc in chosen.values()])
        say(f"==> operator running (log {stack.workdir / 'operator.log'}); applying ModelRollouts")
        for sc in chosen.values():
            stack.apply_rollout(sc.name, sc.manifest(prom.url))
        objs = _watch(console, stack, chosen)
        ok = _summary(console, stack, chosen, objs, time.monotonic() - t0)
        if keep:
            say(f"servers left running; KUBECONFIG={plane.kubeconfig}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        for sc in chosen.values():
            if sc.driver is not None:
                sc.driver.stop()
        stack.stop()
        prom.stop()
        plane.stop()


def _watch(console: Console, stack: Stack, chosen: dict[str, Scenario]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT_S
    objs: dict[str, dict[str, Any]] = {}

    def refresh() -> list[list[str]]:
        for k, sc in chosen.items():
            try:
                objs[k] = stack.rollout(sc.name, sc.name)
            except Exception:  # a transient API error only delays the view
                objs.setdefault(k, {})
        return [_row(k, sc, objs.get(k, {})) for k, sc in chosen.items()]

    def done() -> bool:
        return all((o.get("status") or {}).get("phase") in EXPECTED.values() for o in objs.values())

    if console.is_terminal:
        with Live(_table(refresh()), console=console, refresh_per_second=2) as live:
            while not done() and time.monotonic() < deadline:
                time.sleep(1)
                live.update(_table(refresh()))
    else:  # a log (CI, a pipe): a table every 10 s
        last = 0.0
        while True:
            rows = refresh()
            if done() or time.monotonic() > deadline or time.monotonic() - last > 10:
                console.print(_table(rows))
                last = time.monotonic()
            if done() or time.monotonic() > deadline:
                break
            time.sleep(1)
    return objs


def _summary(
    console: Console, stack: Stack, chosen: dict[str, Scenario], objs: dict[str, dict[str, Any]], wall: float
) -> bool:
    ok = True
    console.print("\n[bold]Summary[/bold]")
    for k, sc in chosen.items():
        st = objs.get(k, {}).get("status") or {}
        got, want = (
            st.get("phase", "Pending"),
            EXPECTED[sc.canary_variant if sc.nan_at is None else "nonfinite"],
        )
        good = got == want
        ok &= good
        mark = "[green]as expected[/green]" if good else "[red]NOT as expected[/red]"
        console.print(f"\n[bold]{k}[/bold] ({sc.name}): {got} (expected {want}) {mark}")
        console.print(f"  {st.get('message', '')}")
        for h in st.get("history", []):
            console.print(f"  {h['time'][11:19]} {h['decision']:<8} {h['canaryWeight']:>3}%  {h['message']}")
        if sc.driver is not None:
            sent = dict(sc.driver.sent)
            console.print(f"  traffic sent: {sent}, labels delivered: {dict(sc.driver.labelled)}")
    verdict = "[green]all scenarios ended as expected[/green]" if ok else "[red]some scenarios did not[/red]"
    console.print(f"\n{verdict}; wall time {wall:.0f}s; logs in {stack.workdir}")
    return ok


def cli(argv: list[str] | None = None) -> int:
    """`lossgate-demo` (what `make demo` runs)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lossgate-demo", description="local control plane, Prometheus, real models, rollouts"
    )
    parser.add_argument("--scenario", action="append", choices=tuple(SCENARIOS), default=[])
    parser.add_argument(
        "--keep", action="store_true", help="leave the servers running until Ctrl-C at the end"
    )
    args = parser.parse_args(argv)
    return main(args.scenario or list(SCENARIOS), keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(cli())
