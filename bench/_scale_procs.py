"""Child processes of the scale benchmark: each in its own process group, killed with it (SIGTERM,
then SIGKILL to the whole group), and sent SIGTERM by the kernel should the harness die first."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv built by the harness
            self.argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # own process group: stop() ends it and anything it started
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if not self.wait(timeout):
                self.signal(signal.SIGKILL)
                self.wait(10)
        else:
            self.signal(signal.SIGKILL)  # leftovers of the group, if any
        with contextlib.suppress(OSError):
            self._fh.close()


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, child: Child | None = None, interval: float = 0.5
) -> float:
    """Poll until check() is true; returns the seconds waited. Raises TimeoutError (with the child's
    log tail) on timeout, RuntimeError if the child exits."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}) while waiting for {what}:\n{child.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - t0
        time.sleep(interval)
    tail = f"\n{child.log_tail()}" if child is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
