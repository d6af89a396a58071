"""The `lossgate` command (also installed as `kubectl-lossgate`)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from lossgate import __version__
from lossgate.cli.commands import add_commands, run_command
from lossgate.joiner.options import add_arguments as add_joiner_arguments


class _Parser(argparse.ArgumentParser):
    """argparse with one-line argument errors (exit 2), as the docs promise; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lossgate",
        description="Loss-aware canary rollouts of ML models on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"lossgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")

    op = sub.add_parser(
        "operator", help="run the operator (kopf) against the current kubeconfig or in-cluster"
    )
    op.add_argument("-n", "--namespace", action="append", default=[], help="watch only these (repeatable)")
    op.add_argument(
        "--metrics-port", type=int, default=None, help="operator metrics port (default 8090; 0 off)"
    )
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    op.add_argument("--peering", default=None, help="kopf peering name for HA (needs kopf's peering CRDs)")

    joiner = sub.add_parser(
        "joiner", help="run the label-join service: predictions + delayed labels -> loss metrics"
    )
    add_joiner_arguments(joiner)

    add_commands(sub)
    return parser


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Every command but `operator` (lossgate.entry runs that one: the CLI never imports the
    reconciler)."""
    if args.command == "version":
        print(__version__)
        return 0
    if args.command is not None:
        return run_command(args, sys.stdout, sys.stderr)
    parser.print_help()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The CLI without the operator (tests call this)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("operator", "joiner"):
        parser.error(f"run the {args.command} with the `lossgate` command (lossgate.entry), not lossgate.cli")
    return dispatch(parser, args)


if __name__ == "__main__":
    sys.exit(main())
