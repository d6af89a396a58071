"""The `lossgate` command (also installed as `kubectl-lossgate`)."""

from __future__ import annotations

import argparse
import sys

from lossgate import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossgate",
        description="Loss-aware canary rollouts of ML models on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"lossgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
