"""Benchmark of `lossgate joiner`: one joiner process, SQLite (WAL) and Redis, on this machine.

    .venv/bin/python bench/joiner.py                       # both stores, writes bench/results/joiner.json
    .venv/bin/python bench/joiner.py --store sqlite --quick

Per store (a fresh joiner process; for Redis a fresh Debian redis-server too):
  open_loop   predictions and labels offered together at --rate items/s each (batches of --batch, one
              batch every batch/rate s per stream; labels for predictions sent >= 1 s earlier) for
              --duration s: the rates achieved, and the ingest latency of each batch request (send to
              response) p50/p99/max
  max         closed loop, --concurrency requests in flight per stream, predictions and labels at once:
              the sustained items/s of each stream
  fill        1,000,000 pending predictions (binary, the shape most fraud/ads models serve), then the
              RSS of the joiner process (and redis-server's RSS and used_memory for Redis)
  breakdown   in-process, per batch of --batch: JSON decoding, validation and log-probabilities
              (lossgate.joiner.parse), the store's transaction, and the /metrics rendering; what is
              left of the HTTP latency is aiohttp and the event loop
The load generator runs on the same machine (aiohttp client, bodies encoded before the clock starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from lossgate.joiner import parse
from lossgate.joiner.exposition import render
from lossgate.joiner.redis_store import RedisStore
from lossgate.joiner.sqlite_store import SqliteStore
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "joiner.json"


def pred_body(start: int, n: int, rng: np.random.Generator, prefix: str = "p") -> bytes:
    ps = rng.random(n)
    items = [
        {"id": f"{prefix}{start + i}", "model": "bench", "version": "v41" if i % 2 else "v42",
         "probabilities": round(float(ps[i]), 6)}
        for i in range(n)
    ]  # fmt: skip
    return json.dumps({"predictions": items}).encode()


def label_body(start: int, n: int, prefix: str = "p") -> bytes:
    items = [{"id": f"{prefix}{start + i}", "label": (start + i) % 2} for i in range(n)]
    return json.dumps({"labels": items}).encode()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = cpu[3] + cpu[4]
    return float(sum(cpu) - idle), float(sum(cpu))


class Meter:
    """CPU of the joiner (and redis-server) over a phase, and how busy the whole machine was
    (other sessions share it: their load shows as machine_busy_cores beyond ours)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        self.m0 = machine_busy()
        self.t0 = time.perf_counter()

    def read(self, items: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        busy, total = machine_busy()
        ncpu = os.cpu_count() or 1
        out: dict[str, Any] = {
            "machine_busy_cores": round((busy - self.m0[0]) / max(total - self.m0[1], 1) * ncpu, 2),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        for k, p in self.pids.items():
            used = cpu_s(p) - self.cpu0[k]
            out[f"{k}_cpu_cores"] = round(used / wall, 2)
            out[f"{k}_cpu_us_per_item"] = round(used / max(items, 1) * 1e6, 2)
        return out


def _lat(xs: list[float]) -> dict[str, float]:
    return {f"p{q}": round(pct(xs, q) * 1e3, 2) for q in (50, 90, 99)} | {"max": round(max(xs) * 1e3, 2)}


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    t = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
    return time.perf_counter() - t


async def open_loop(
    url: str, rate: float, duration: float, batch: int, pids: dict[str, int]
) -> dict[str, Any]:
    """Predictions and labels offered at `rate` items/s each; latency of every batch request."""
    n = int(rate * duration / batch)
    rng = np.random.default_rng(1)
    preds = [pred_body(k * batch, batch, rng, "o") for k in range(n)]
    labels = [label_body(k * batch, batch, "o") for k in range(n)]
    lag = max(1, int(rate / batch))  # labels trail their predictions by about one second
    period = batch / rate
    lat: dict[str, list[float]] = {"predictions": [], "labels": []}
    done: dict[str, float] = {}
    meter = Meter(pids)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        t0 = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []

        async def one(kind: str, body: bytes) -> None:
            lat[kind].append(await _post(s, f"{url}/v1/{kind}", body))
            done[kind] = time.perf_counter()

        for k in range(n + lag):
            await asyncio.sleep(max(0.0, t0 + k * period - time.perf_counter()))
            if k < n:
                tasks.append(asyncio.create_task(one("predictions", preds[k])))
            if k >= lag:
                tasks.append(asyncio.create_task(one("labels", labels[k - lag])))
        await asyncio.gather(*tasks)
    first = {"predictions": t0, "labels": t0 + lag * period}
    out: dict[str, Any] = {"offered_items_per_s": rate, "batch": batch, "cpu": meter.read(2 * n * batch)}
    for kind, xs in lat.items():
        out[kind] = {"items_per_s": round(n * batch / (done[kind] - first[kind]), 1), "latency_ms": _lat(xs)}
    return out


async def closed_loop(
    url: str, duration: float, batch: int, concurrency: int, pids: dict[str, int]
) -> dict[str, Any]:
    """As fast as it goes: `concurrency` requests in flight per stream."""
    rng = np.random.default_rng(2)
    counters = {"predictions": 0, "labels": 0}
    lat: dict[str, list[float]] = {"predictions": [], "labels": []}
    next_id, labelled = [0], [0]
    stop = time.perf_counter() + duration

    async def preds(s: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop:
            start = next_id[0]
            next_id[0] += batch
            lat["predictions"].append(
                await _post(s, f"{url}/v1/predictions", pred_body(start, batch, rng, "c"))
            )
            counters["predictions"] += batch

    async def labels(s: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop:
            if labelled[0] + batch > next_id[0] - 2 * batch * concurrency:
                await asyncio.sleep(0.001)
                continue
            start = labelled[0]
            labelled[0] += batch
            lat["labels"].append(await _post(s, f"{url}/v1/labels", label_body(start, batch, "c")))
            counters["labels"] += batch

    meter = Meter(pids)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(
            *[preds(s) for _ in range(concurrency)], *[labels(s) for _ in range(concurrency)]
        )
        elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {"batch": batch, "concurrency_per_stream": concurrency}
    out["cpu"] = meter.read(counters["predictions"] + counters["labels"])
    for kind, c in counters.items():
        out[kind] = {"items_per_s": round(c / elapsed, 1), "latency_ms": _lat(lat[kind])}
    return out


async def fill(url: str, n: int, batch: int, concurrency: int) -> float:
    rng = np.random.default_rng(3)
    queue = list(range(0, n, batch))

    async def worker(s: aiohttp.ClientSession) -> None:
        while queue:
            start = queue.pop()
            await _post(s, f"{url}/v1/predictions", pred_body(start, min(batch, n - start), rng, "f"))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(s) for _ in range(concurrency)])
        return time.perf_counter() - t0


def breakdown(store: Any, batch: int, rounds: int) -> dict[str, float]:
    """Mean milliseconds per batch of each in-process stage."""
    rng = np.random.default_rng(4)
    t: dict[str, list[float]] = {k: [] for k in ("parse_predictions", "store_predictions", "parse_labels",
                                                  "store_labels", "render_metrics")}  # fmt: skip
    for r in range(rounds):
        body, now = pred_body(r * batch, batch, rng, "b"), time.time()
        a = time.perf_counter()
        items = parse.predictions(parse.loads(body), now)
        b = time.perf_counter()
        store.add_predictions(items, now)
        c = time.perf_counter()
        labels = parse.labels(parse.loads(label_body(r * batch, batch, "b")))
        d = time.perf_counter()
        store.add_labels(labels, now)
        e = time.perf_counter()
        t["parse_predictions"].append(b - a)
        t["store_predictions"].append(c - b)
        t["parse_labels"].append(d - c)
        t["store_labels"].append(e - d)
    for _ in range(20):
        a = time.perf_counter()
        render(store)
        t["render_metrics"].append(time.perf_counter() - a)
    return {k: round(statistics.fmean(v) * 1e3, 3) for k, v in t.items()}


def run_store(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis: RedisServer | None = None
    if kind == "redis":
        redis = RedisServer.start(work / "redis")
        store_args = ["--redis", redis.url]
    else:
        store_args = ["--sqlite", str(work / "joiner.db")]
    j = JoinerProcess.start(work / "joiner", *store_args, "--capacity", "2000000", "--log-level", "WARNING")
    out: dict[str, Any] = {}
    try:
        pid = j.server.proc.pid if j.server else 0
        pids = {"joiner": pid} | ({"redis": redis.server.proc.pid} if redis is not None else {})
        print(f"[{kind}] open loop: {args.rate:.0f} predictions/s + {args.rate:.0f} labels/s", flush=True)
        out["open_loop"] = asyncio.run(open_loop(j.url, args.rate, args.duration, args.batch, pids))
        print(f"[{kind}] {json.dumps(out['open_loop'])}", flush=True)
        out["max"] = asyncio.run(closed_loop(j.url, args.duration, args.batch, args.concurrency, pids))
        print(f"[{kind}] max {json.dumps(out['max'])}", flush=True)
        n = 100_000 if args.quick else 1_000_000
        before = j.get("/healthz")["pending"]
        secs = asyncio.run(fill(j.url, n - before, 1000, 4))
        fill_out: dict[str, Any] = {
            "pending": j.get("/healthz")["pending"],
            "seconds": round(secs, 1),
            "predictions_per_s": round((n - before) / secs, 1),
            "joiner_rss_mib": round(rss_mib(pid), 1),
        }
        if redis is not None:
            info = RedisStore(redis.url).r.info("memory")
            fill_out["redis_used_memory_mib"] = round(int(info["used_memory"]) / 2**20, 1)
            fill_out["redis_rss_mib"] = round(rss_mib(redis.server.proc.pid), 1)
        else:
            fill_out["sqlite_files_mib"] = round(
                sum(p.stat().st_size for p in work.glob("joiner.db*")) / 2**20, 1
            )
        out["fill"] = fill_out
        print(f"[{kind}] fill {json.dumps(fill_out)}", flush=True)
    finally:
        j.stop()
    try:
        st: Any = (
            RedisStore(redis.url, prefix="{bench}")
            if redis is not None
            else SqliteStore(work / "breakdown.db", capacity=2_000_000)
        )
        out["breakdown_ms_per_batch"] = breakdown(st, args.batch, 50 if args.quick else 300)
        st.close()
        print(f"[{kind}] breakdown {json.dumps(out['breakdown_ms_per_batch'])}", flush=True)
    finally:
        if redis is not None:
            redis.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=("sqlite", "redis", "both"), default="both")
    p.add_argument("--rate", type=float, default=10_000.0, help="offered items/s per stream (10000)")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="100k pending instead of 1M, shorter breakdown")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    stores = ["sqlite", "redis"] if args.store == "both" else [args.store]
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "goal": {"predictions_per_s": 10_000, "labels_per_s": 10_000, "p99_ms": 20},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    with tempfile.TemporaryDirectory(prefix="lossgate-bench-joiner-") as tmp:
        for kind in stores:
            results[kind] = run_store(kind, args, Path(tmp) / kind)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
