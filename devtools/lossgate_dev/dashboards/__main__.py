"""`python -m lossgate_dev.dashboards [DIR ...]`: write every dashboard as DIR/<name>.json (default:
dashboards/ and the chart's copy, helm/lossgate/files/dashboards/, which Helm can only read inside
the chart), or with --check only say which differ from what is written (exit 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lossgate_dev.dashboards.boards import ALL
from lossgate_dev.dashboards.common import to_json

DIRS = ("dashboards", "helm/lossgate/files/dashboards")


def rendered() -> dict[str, str]:
    return {f"{name}.json": to_json(build()) for name, build in ALL.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lossgate_dev.dashboards")
    ap.add_argument("dirs", nargs="*", default=[Path(d) for d in DIRS], type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 when a written dashboard differs")
    args = ap.parse_args(argv)
    stale = []
    for folder in args.dirs:
        for name, text in rendered().items():
            path = folder / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path}")
    if stale:
        print("out of date (run `make dashboards`): " + ", ".join(stale), file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
