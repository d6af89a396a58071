"""The joiner's command-line options (argparse only: `lossgate --help` imports nothing heavier)."""

from __future__ import annotations

import argparse
import os
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_TTL_S = 8 * 604800.0  # eight weeks


def seconds(text: str) -> float:
    """ "3600", "90m", "36h", "14d", "2w" -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use seconds or 90m, 36h, 14d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def ttl(text: str) -> float:
    s = seconds(text)
    if not 0 < s <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"--ttl must be more than 0 and at most 8w, got {text!r}")
    return s


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=int, default=8095, help="HTTP port: API and /metrics (default 8095)")
    p.add_argument(
        "--sqlite", default=None, metavar="PATH", help="SQLite file (WAL) on a volume (the default store)"
    )
    p.add_argument("--sqlite-synchronous", choices=("NORMAL", "FULL"), default="NORMAL",
                   help="NORMAL survives a killed process; FULL also a power loss (slower)")  # fmt: skip
    p.add_argument(
        "--redis",
        default=os.environ.get("LOSSGATE_JOINER_REDIS_URL") or None,
        metavar="URL",
        help="Redis URL (redis://host:6379/0): shared state for replicas (env LOSSGATE_JOINER_REDIS_URL)",
    )
    p.add_argument(
        "--redis-prefix", default="{lossgate}", help="key prefix, a Cluster hash tag (default {lossgate})"
    )
    p.add_argument(
        "--ttl", type=ttl, default=14 * 86400.0, help="how long a prediction waits for its label (14d)"
    )
    p.add_argument("--grace", type=seconds, default=86400.0,
                   help="how long labelled/expired ids are remembered past their deadline (1d)")  # fmt: skip
    p.add_argument("--capacity", type=int, default=1_000_000, help="pending predictions at most (429 beyond)")
    p.add_argument(
        "--max-classes", type=int, default=32,
        help="`class` label values per model version; later ones are folded into 'other' and counted (32)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, help="store threads (default 1 for SQLite, 8 for Redis)"
    )
    p.add_argument("--expire-every", type=seconds, default=1.0, help="expiry pass interval (1s)")
    p.add_argument("--retry-after", type=int, default=5, help="Retry-After seconds on 429/503 (5)")
    p.add_argument(
        "--allow-clock-override", action="store_true", help="tests only: POST /v1/clock moves the clock"
    )
    p.add_argument(
        "--export-lease", type=seconds, default=30.0,
        help="Redis: how long the replica exporting the shared counters keeps that role unscraped (30s)",
    )  # fmt: skip
    p.add_argument("--log-level", default="INFO")
