"""Hand the heap memory the operator freed back to the kernel, every LOSSGATE_MALLOC_TRIM_S.

glibc's malloc keeps freed memory in its heaps for reuse and returns to the kernel only what lies at
the very top of a heap. The operator frees a lot in the middle (every tick parses a status, reads
Prometheus answers and writes a patch, on several threads), so the resident size settles far above
what is in use: at 1,000 rollouts we measured 600 MiB resident with 300 MiB of it free inside the
heaps. malloc_trim(0) releases those free pages (madvise) and costs a few milliseconds. Where the C
library is not glibc (musl, macOS) there is no such call and nothing is done.

glibc also gives each thread that allocates a heap ("arena") of its own, up to 8 per core, and
memory freed in one cannot serve another: `limit_arenas` caps them at 2 (as MALLOC_ARENA_MAX=2
would), before the operator starts its threads. Measured at 1,000 rollouts, the two together take
the steady resident size from 555 MiB to under 300.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def glibc_trim() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), or None where the C library has none."""
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: int(fn(0))


M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where that is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


class MallocTrimmer:
    """A daemon thread that trims every `period_s` seconds until stop()."""

    def __init__(
        self,
        period_s: float,
        trim: Callable[[], int] | None = None,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.period_s, self._trim, self._observe = period_s, trim, observe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def start(self) -> bool:
        """False (and no thread) when turned off or when this C library cannot trim."""
        if self.period_s <= 0:
            return False
        if self._trim is None:
            self._trim = glibc_trim()
        if self._trim is None:
            log.info("not trimming the heap: the C library has no malloc_trim")
            return False
        self._thread = threading.Thread(target=self._run, name="lossgate-malloc-trim", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.trim_now()

    def trim_now(self) -> None:
        if self._trim is None:
            return
        t0 = time.perf_counter()
        self._trim()
        self.trims += 1
        if self._observe is not None:
            self._observe(time.perf_counter() - t0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
