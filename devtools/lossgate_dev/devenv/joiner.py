"""`lossgate joiner` as a real process on a free loopback port (tests, the demo and bench/joiner.py)."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossgate_dev.devenv.procs import Server, free_port, wait_until


@dataclass
class JoinerProcess:
    workdir: Path
    args: list[str]
    port: int = 0
    server: Server | None = None
    restarts: int = field(default=0)
    subcommand: bool = False

    @classmethod
    def start(cls, workdir: Path, *args: str, subcommand: bool = False) -> JoinerProcess:
        """Start with `args` (e.g. "--sqlite", path or "--redis", url); waits for /healthz."""
        workdir.mkdir(parents=True, exist_ok=True)
        j = cls(workdir, list(args), free_port(), subcommand=subcommand)
        j.launch()
        return j

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> None:
        # `lossgate joiner` (the subcommand) or `lossgate-joiner` (its own entry point): the same options.
        command = ["lossgate.entry", "joiner"] if self.subcommand else ["lossgate.joiner.cli"]
        argv = [sys.executable, "-m", *command, "--listen", "127.0.0.1", "--port", str(self.port)]
        log = self.workdir / f"joiner-{self.port}.log"
        self.server = Server("lossgate-joiner", [*argv, *self.args], log, env={"PYTHONUNBUFFERED": "1"})
        wait_until(lambda: self.get("/healthz")["ok"] is True, 30, "joiner /healthz", self.server)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill9(self) -> None:
        """SIGKILL: no shutdown handler runs (what a crash or the OOM killer does)."""
        if self.server is None:
            return
        os.kill(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(10)
        self.server.stop()

    def restart(self) -> None:
        """Start again on the same port and store."""
        self.restarts += 1
        self.launch()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
