"""`lossgate joiner` / `lossgate-joiner`: run the label-join service."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from lossgate.joiner.app import Clock, Joiner
from lossgate.joiner.options import add_arguments
from lossgate.joiner.store import Store


def open_store(args: argparse.Namespace) -> Store:
    common = {"capacity": args.capacity, "ttl_s": args.ttl, "grace_s": args.grace}
    if args.redis and args.sqlite:
        raise SystemExit("lossgate joiner: give --sqlite PATH or --redis URL, not both")
    if args.redis:
        from lossgate.joiner.redis_store import RedisStore

        return RedisStore(args.redis, prefix=args.redis_prefix, lease_s=args.export_lease, **common)
    from lossgate.joiner.sqlite_store import SqliteStore

    return SqliteStore(args.sqlite or "lossgate-joiner.db", synchronous=args.sqlite_synchronous, **common)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.capacity < 1:
        raise SystemExit("lossgate joiner: --capacity must be at least 1")
    if args.max_classes < 1:
        raise SystemExit("lossgate joiner: --max-classes must be at least 1")
    store = open_store(args)
    threads = args.threads or (8 if args.redis else 1)
    joiner = Joiner(
        store, clock=Clock(), threads=threads, expire_every_s=args.expire_every,
        retry_after_s=args.retry_after, allow_clock_override=args.allow_clock_override,
        max_classes=args.max_classes,
    )  # fmt: skip
    backend = f"redis {args.redis_prefix}" if args.redis else f"sqlite {args.sqlite or 'lossgate-joiner.db'}"
    logging.getLogger("lossgate.joiner").info("joiner on %s:%d, %s", args.listen, args.port, backend)
    web.run_app(joiner.app(), host=args.listen, port=args.port, print=None, access_log=None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lossgate-joiner", description="Durable label-join service (docs/joiner.md)."
    )
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
