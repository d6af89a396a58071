"""The `lossgate` console script: `lossgate operator` runs the reconciler, `lossgate joiner` the
label-join service (lossgate.joiner), every other command is the CLI. Kept apart so that the CLI
package never imports the reconciler (an import-linter contract)."""

from __future__ import annotations

import sys

from lossgate.cli.main import build_parser, dispatch


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "operator":
        from lossgate.reconcile.main import run

        run(args.namespace, liveness=args.liveness, peering=args.peering, metrics_port=args.metrics_port)
        return 0
    if args.command == "joiner":
        from lossgate.joiner.cli import run as run_joiner

        return run_joiner(args)
    return dispatch(parser, args)


if __name__ == "__main__":
    sys.exit(main())
