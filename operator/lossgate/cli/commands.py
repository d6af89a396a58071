"""The user-facing subcommands: get, promote|abort|retry|pause|resume, replay, plot."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from lossgate.adapters.kube import typed
from lossgate.cli.kubeconn import CliError, UsageError
from lossgate.core.observation import ManualCommand

CONTROL_HELP = {
    ManualCommand.PROMOTE: "canary to 100%% now (skips the remaining analysis)",
    ManualCommand.ABORT: "roll back now (canary to 0%%)",
    ManualCommand.RETRY: "restart a RolledBack or Failed rollout from step 1",
    ManualCommand.PAUSE: "hold the weight (rollbacks stay armed)",
    ManualCommand.RESUME: "release a pause set with `lossgate pause`",
}


def _kube_flags(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")


def add_commands(sub: Any) -> None:
    get = sub.add_parser("get", help="show ModelRollouts: phase, step, weights, evidence, decisions")
    get.add_argument("name", nargs="?", default=None, help="one rollout (detail view); all when left out")
    _kube_flags(get, all_namespaces=True)
    get.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    get.add_argument("-w", "--watch", action="store_true", help="redraw whenever the status changes")
    get.add_argument("--watch-timeout", type=float, default=None, help="stop watching after SECONDS")

    for cmd, text in CONTROL_HELP.items():
        c = sub.add_parser(cmd.value, help=text)
        c.add_argument("name", help="the ModelRollout")
        _kube_flags(c)

    r = sub.add_parser("replay", help="run the judge, or the whole rollout, offline over Prometheus history")
    r.add_argument(
        "name", nargs="?", default=None, help="a past ModelRollout: replay its decisions (implies --simulate)"
    )
    _kube_flags(r)
    r.add_argument(
        "--simulate",
        action="store_true",
        help="run the state machine (steps, quotas, guards) on a virtual clock",
    )
    r.add_argument(
        "--split",
        type=float,
        default=None,
        help="--simulate on an A/B history: its canary fraction (measured)",
    )
    r.add_argument("--scrape-lag", default="15s", help="--simulate: the operator's LOSSGATE_SCRAPE_LAG_S")
    r.add_argument("--sweep-margin", default=None, metavar="M1,M2", help="--simulate once per margin (nats)")
    r.add_argument(
        "--sweep-alpha",
        default=None,
        metavar="A|R/P,...",
        help="--simulate once per alpha (or rollback/promote)",
    )
    r.add_argument("--prometheus", default=None, help="Prometheus URL (default: the spec's)")
    r.add_argument("--model", default=None, help="`model` label of the serving metrics")
    r.add_argument("--baseline", default=None, help="baseline `version` label")
    r.add_argument("--canary", default=None, help="canary `version` label")
    r.add_argument(
        "--from", dest="from_", metavar="T", default=None, help="start: ISO 8601, unix seconds or now-2h"
    )
    r.add_argument("--to", default="now", metavar="T", help="end (default now)")
    r.add_argument("--interval", default=None, help="analysis interval (default: the spec's, else 30s)")
    r.add_argument("--spec", default=None, help="a ModelRollout manifest: series, margin, alphas, quotas")
    r.add_argument("--metric", default=None, help="loss histogram name (default model_prediction_loss)")
    r.add_argument("--margin", type=float, default=None, help="margin in nats")
    r.add_argument("--relative-margin", type=float, default=None, help="margin / baseline mean (0.02)")
    r.add_argument("--alpha-rollback", type=float, default=None)
    r.add_argument("--alpha-promote", type=float, default=None)
    r.add_argument("--min-samples-before-rollback", type=float, default=None)
    r.add_argument("--min-samples-before-promotion", type=float, default=None)
    r.add_argument("--weight", type=int, default=None, help="canary %% in force (drops the first interval)")
    r.add_argument("--plot", default=None, metavar="PNG", help="draw delta, CS, margin and the decision")
    r.add_argument("-o", "--output", choices=("table", "json"), default="table")

    p = sub.add_parser("plot", help="draw a rollout's delta and confidence sequence over time (PNG)")
    p.add_argument("name", help="the ModelRollout")
    _kube_flags(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--prometheus", default=None, help="Prometheus URL (default: the spec's address)")


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a subcommand; problems are one line on stderr: exit code 2 for argument errors, else 1."""
    try:
        return _dispatch(args, out)
    except UsageError as e:
        err.write(f"error: {e}\n")
        return 2
    except CliError as e:
        err.write(f"error: {e}\n")
        return 1
    except OSError as e:  # the API server or Prometheus could not be reached
        err.write(f"error: {type(e).__name__}: {e}\n")
        return 1


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    from urllib3.exceptions import HTTPError

    try:
        return _run(args, out)
    except HTTPError as e:
        raise CliError(f"cannot reach the API server: {e}") from e


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "replay":
        from lossgate.cli.replay import run_replay

        return run_replay(args, out)
    from lossgate.cli.kubeconn import Rollouts, connect

    api, default_ns = connect(args.kubeconfig, args.context)
    rollouts = Rollouts(api)
    namespace = args.namespace or default_ns
    try:
        if args.command == "get":
            from lossgate.cli.get import run_get

            ns = None if args.all_namespaces else namespace
            return run_get(rollouts, ns, args.name, args.output, out, args.watch, args.watch_timeout)
        if args.command == "plot":
            from lossgate.cli.plot import run_plot

            return run_plot(rollouts, namespace, args.name, args.out, args.prometheus, out)
        from lossgate.cli.control import run_command as control

        return control(rollouts, ManualCommand(args.command), namespace, args.name, out)
    finally:
        typed.close(api)
