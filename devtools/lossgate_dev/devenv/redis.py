"""A real Redis (Debian's redis-server) on a free loopback port, data in a temp dir, append-only."""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lossgate_dev.devenv.procs import Server, free_port, wait_until


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


@dataclass
class RedisServer:
    workdir: Path
    port: int
    server: Server

    @classmethod
    def start(cls, workdir: Path | None = None) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise FileNotFoundError(
                "redis-server not found on PATH: install Debian's package with `make deps`."
            )
        wd = Path(workdir or tempfile.mkdtemp(prefix="lossgate-redis-"))
        wd.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(wd), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes",
            "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        srv = Server("redis-server", argv, wd / "redis.log")
        wait_until(lambda: _ping(port), 30, "redis-server PING", srv)
        return cls(wd, port, srv)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.server.stop()
