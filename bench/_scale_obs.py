"""Measurement helpers of the scale benchmark: /proc CPU and memory, Prometheus text scrapes,
histogram quantiles from bucket deltas, percentiles, speedscope summaries."""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


# /proc ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def mem_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class ProcWindow:
    """CPU and memory of one process over a window: start() ... sample() ... stop()."""

    pid: int
    name: str
    cpu0: float = 0.0
    t0: float = 0.0
    cpu1: float = 0.0
    t1: float = 0.0
    rss_max_kib: int = 0
    rss_last_kib: int = 0
    hwm_kib: int = 0
    alive: bool = True

    def start(self) -> None:
        self.t0, self.cpu0 = time.monotonic(), cpu_seconds(self.pid)
        self.sample()

    def sample(self) -> None:
        try:
            m = mem_kib(self.pid)
            self.cpu1, self.t1 = cpu_seconds(self.pid), time.monotonic()
        except (OSError, ValueError):
            self.alive = False
            return
        self.rss_last_kib = m.get("VmRSS", 0)
        self.rss_max_kib = max(self.rss_max_kib, self.rss_last_kib)
        self.hwm_kib = m.get("VmHWM", 0)

    def result(self) -> dict[str, Any]:
        span = max(self.t1 - self.t0, 1e-9)
        return {
            "cpu_cores": round((self.cpu1 - self.cpu0) / span, 4),
            "cpu_seconds": round(self.cpu1 - self.cpu0, 3),
            "window_s": round(span, 2),
            "rss_final_mib": round(self.rss_last_kib / 1024, 1),
            "rss_peak_in_window_mib": round(self.rss_max_kib / 1024, 1),
            "rss_peak_since_start_mib": round(self.hwm_kib / 1024, 1),  # VmHWM
            "alive": self.alive,
        }


# Prometheus text ---------------------------------------------------------------------------------------


def http_get(url: str, token: str | None = None, ca: str | None = None, timeout: float = 20) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback URLs we built)
    ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:  # noqa: S310
        return bytes(r.read())


def parse_text(body: str, prefixes: Sequence[str]) -> list[Sample]:
    """Samples of the families whose names start with one of `prefixes` (exposition format 0.0.4)."""
    out: list[Sample] = []
    for line in body.splitlines():
        if not line or line[0] == "#" or not line.startswith(tuple(prefixes)):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            continue
    return out


def scrape(
    url: str, prefixes: Sequence[str], token: str | None = None, ca: str | None = None
) -> list[Sample]:
    return parse_text(http_get(url, token, ca).decode(errors="replace"), prefixes)


def total(samples: Iterable[Sample], name: str, **match: str) -> float:
    return sum(
        v
        for n, lb, v in samples
        if n == name and all(re.fullmatch(p, lb.get(k, "")) for k, p in match.items())
    )


def grouped(samples: Iterable[Sample], name: str, by: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lb, v in samples:
        if n == name:
            out["/".join(lb.get(k, "") for k in by)] += v
    return dict(out)


def delta_grouped(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def histogram_delta(before: list[Sample], after: list[Sample], name: str) -> dict[str, Any]:
    """count, sum and p50/p90/p99 of a histogram's observations between two scrapes (linear
    interpolation inside a bucket, as histogram_quantile does)."""

    def buckets(samples: list[Sample]) -> dict[float, float]:
        acc: dict[float, float] = defaultdict(float)
        for n, lb, v in samples:
            if n == f"{name}_bucket":
                acc[float(lb["le"])] += v
        return acc

    b0, b1 = buckets(before), buckets(after)
    cum = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)
    count = total(after, f"{name}_count") - total(before, f"{name}_count")
    sum_ = total(after, f"{name}_sum") - total(before, f"{name}_sum")
    out: dict[str, Any] = {"count": count, "mean_s": round(sum_ / count, 4) if count else None}
    for q in (0.5, 0.9, 0.99):
        out[f"p{round(q * 100)}_s"] = _bucket_quantile(q, cum) if count else None
    out["buckets"] = {format(le, "g"): c for le, c in cum}
    return out


def _bucket_quantile(q: float, cum: list[tuple[float, float]]) -> float | None:
    if not cum or cum[-1][1] <= 0:
        return None
    rank = q * cum[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if math.isinf(le):
                return prev_le  # beyond the largest finite bound: report that bound (a lower bound)
            width = c - prev_c
            return round(prev_le + (le - prev_le) * ((rank - prev_c) / width if width else 1.0), 4)
        prev_le, prev_c = le, c
    return None


def percentiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """Nearest-rank percentiles, plus n, min, max and mean."""
    if not values:
        return {"n": 0}
    xs = sorted(values)
    out: dict[str, Any] = {"n": len(xs), "min": round(xs[0], 3), "max": round(xs[-1], 3)}
    out["mean"] = round(sum(xs) / len(xs), 3)
    for q in qs:
        out[f"p{round(q * 100)}"] = round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 3)
    return out


# py-spy ----------------------------------------------------------------------------------------------


def speedscope_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Inclusive and self percentages per function over every thread's samples of a py-spy
    speedscope file (percent of all non-idle samples: py-spy leaves idle threads out by default).
    Inclusive lists are split: lossgate's own functions, then the libraries' (stdlib wrappers such as
    the event loop and thread bootstrap, which include everything, are left out of those lists)."""
    doc = json.loads(path.read_text())
    labels = [f"{f.get('name', '?')} ({_short(f.get('file', '?'))})" for f in doc["shared"]["frames"]]
    inclusive: dict[str, float] = defaultdict(float)
    self_: dict[str, float] = defaultdict(float)
    total_w = 0.0
    per_thread: dict[str, float] = defaultdict(float)
    for prof in doc.get("profiles", []):
        for stack, w in zip(prof.get("samples", []), prof.get("weights", []), strict=False):
            total_w += w
            per_thread[str(prof.get("name", "?"))] += w
            for name in {labels[i] for i in stack}:
                inclusive[name] += w
            if stack:
                self_[labels[stack[-1]]] += w
    if total_w <= 0:
        return {"sampled_seconds": 0}

    def rank(acc: dict[str, float], keep: Any = None) -> list[dict[str, Any]]:
        items = [(k, w) for k, w in acc.items() if keep is None or keep(k)]
        best = sorted(items, key=lambda kv: -kv[1])[:top]
        return [{"function": k, "percent": round(100 * w / total_w, 1)} for k, w in best]

    def ours(k: str) -> bool:
        return "(lossgate/" in k and "lossgate/entry.py" not in k and "lossgate/reconcile/main.py" not in k

    def libs(k: str) -> bool:
        return (
            "(stdlib:" not in k
            and "(lossgate/" not in k
            and "(<frozen" not in k
            and "(kopf/_core/reactor" not in k
        )

    threads = sorted(per_thread.items(), key=lambda kv: -kv[1])[:8]
    unit = (doc.get("profiles") or [{}])[0].get("unit", "samples")
    return {
        f"sampled_{unit}": round(total_w, 2),
        "top_inclusive_lossgate": rank(inclusive, ours),
        "top_inclusive_libraries": rank(inclusive, libs),
        "top_self": rank(self_),
        "threads_percent": {k: round(100 * w / total_w, 1) for k, w in threads},
    }


def _short(file: str) -> str:
    """site-packages/kopf/x.py -> kopf/x.py; .../operator/lossgate/x.py -> lossgate/x.py; stdlib: prefix."""
    m = re.search(r"/lib/python3\.\d+/(?!site-packages/)", file)
    if m:
        return "stdlib:" + file[m.end() :]
    for marker in ("site-packages/", "/operator/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file
