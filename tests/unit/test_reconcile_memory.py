"""The heap trimmer: freed memory goes back to the kernel (real glibc), on its period, and not at all
when turned off."""

from __future__ import annotations

import threading
from pathlib import Path

from lossgate.reconcile.memory import MallocTrimmer, glibc_trim

BLOCK = 4096  # bytes objects this large come from malloc, not from CPython's small-object pools
COUNT = 25_000  # about 100 MiB


def _rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_trimming_returns_freed_heap_memory_to_the_kernel() -> None:
    # Given 100 MiB of heap blocks of which all but every 64th is freed: the survivors pin the heap,
    # so glibc keeps the freed pages between them resident
    trim = glibc_trim()
    assert trim is not None  # this machine's C library is glibc
    trim()
    blocks = [bytes(BLOCK) for _ in range(COUNT)]
    for i in range(COUNT):
        blocks[i] = b"" if i % 64 else blocks[i]
    freed_kib = COUNT * BLOCK * 63 // 64 // 1024
    before = _rss_anon_kib()
    # When the trimmer trims once
    observed: list[float] = []
    MallocTrimmer(30, trim, observed.append).trim_now()
    after = _rss_anon_kib()
    print(f"RssAnon {before} -> {after} KiB; {freed_kib} KiB freed")
    # Then most of what was freed left the process (each survivor keeps at most its own 4 KiB page
    # and a neighbour: 2/64 of the blocks' pages), and the trim's duration was reported
    assert before - after >= freed_kib * (1 - 2 / 64) * 0.9
    assert len(observed) == 1
    del blocks


def test_the_trimmer_trims_on_its_period_and_stops() -> None:
    # Given a trimmer with a fast period and a counting trim
    calls = threading.Semaphore(0)
    trimmer = MallocTrimmer(0.01, lambda: calls.release() or 0)
    # When it runs, then it trims again and again until stopped
    assert trimmer.start()
    assert all(calls.acquire(timeout=5) for _ in range(3))
    trimmer.stop()
    assert trimmer.trims >= 3
    assert not trimmer.alive  # the thread has ended: no trim after stop()


def test_a_period_of_zero_starts_nothing() -> None:
    trimmer = MallocTrimmer(0, lambda: 0)
    assert trimmer.start() is False
    trimmer.stop()
    assert trimmer.trims == 0


def test_arenas_can_be_capped_on_glibc() -> None:
    # Given this machine's glibc, when the operator caps its malloc arenas, then glibc accepts it
    from lossgate.reconcile.memory import limit_arenas

    assert limit_arenas(8) is True  # a cap this test process runs well under
