"""The shared store: Redis, for several joiner replicas (or more throughput than one process).

Every change that moves a counter is one Lua script (lossgate.joiner.redis_lua), so replicas can
receive the same label or event at once and it is still counted once. All keys share the hash tag
of the prefix (`{lossgate}` by default): on Redis Cluster they live in one slot, so the scripts run
there unchanged (one shard holds one joiner deployment's state; give each deployment its own prefix
to spread several over the cluster).
"""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from lossgate.instrument.buckets import LOSS_BUCKETS
from lossgate.instrument.calibration import CALIBRATION_BINS, Calibrated
from lossgate.instrument.tokens import TokenSums
from lossgate.joiner.accounting import DELAY_BUCKETS, EXPIRY_REASONS, PairSums, Series, pair_losses, score
from lossgate.joiner.records import (
    FieldError,
    Full,
    Label,
    LabelResult,
    PairKey,
    Prediction,
    PredictResult,
    SeriesKey,
    pair_key,
    pair_name,
    series_key,
    series_name,
)  # fmt: skip
from lossgate.joiner.redis_lua import ARM_FIELDS, EXPIRE, LABEL, LEASE, PREDICT
from lossgate.joiner.store import OUTCOMES, first_seen

_EXPIRE_BATCH = 2000
_RETRIES = 8  # label passes when arms keep being added to the ids being labelled


def records(value: bytes) -> list[bytes]:
    """The records of a pending value: one, or several arms' (see redis_lua)."""
    if not value.startswith(b"\0"):
        return [value]
    out, i = [], 1
    while i < len(value):
        (n,) = struct.unpack_from("<I", value, i)
        out.append(value[i + 4 : i + 4 + n])
        i += 4 + n
    return out


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "{lossgate}",
        capacity: int = 1_000_000,
        ttl_s: float = 14 * 86400.0,
        grace_s: float = 86400.0,
        wall: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        lease_s: float = 30.0,
    ) -> None:
        if capacity < 1 or ttl_s <= 0 or grace_s < 0:
            raise ValueError("capacity must be >= 1, ttl_s > 0 and grace_s >= 0")
        self.capacity, self.ttl_s, self.grace_s = capacity, float(ttl_s), float(grace_s)
        self._wall = wall
        self.r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix = prefix
        names = ("pending", "deadlines", "done", "forget", "outcomes", "series", "pairs", "npending")
        k = {n: f"{prefix}:{n}" for n in names}
        self.k = k
        self._predict = self.r.register_script(PREDICT)
        self._label = self.r.register_script(LABEL)
        self._expire = self.r.register_script(EXPIRE)
        self._lease = self.r.register_script(LEASE)
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ms = max(1, int(lease_s * 1000))
        self.r.ping()

    def _skey(self, key: SeriesKey) -> str:
        return f"{self.prefix}:s:{series_name(key)}"

    def _pkey(self, key: PairKey) -> str:
        return f"{self.prefix}:p:{pair_name(key)}"

    def add_predictions(self, batch: list[Prediction], now: float) -> PredictResult:
        fresh, result = first_seen(batch, set(), set(), now, self.ttl_s)
        skeys: dict[str, int] = {}
        args: list[Any] = [self.capacity, repr(self._wall()), result.duplicate, result.stale, len(fresh)]
        for p in fresh:
            sk = self._skey(p.key)
            idx = skeys.setdefault(sk, len(skeys) + 1)
            args += [
                p.id,
                idx,
                repr(p.served_at + self.ttl_s),
                f"{sk}\n".encode() + struct.pack("<d", p.served_at) + p.lp,
                self._skey((p.key[0], p.key[1], None)).removesuffix("null]"),  # the arm's prefix
            ]
        k = self.k
        keys = [k["pending"], k["deadlines"], k["done"], k["outcomes"], k["series"], k["npending"], *skeys]
        accepted, second = self._predict(keys=keys, args=args)
        if accepted < 0:
            raise Full(int(second), self.capacity, len(fresh))
        return PredictResult(int(accepted), int(second), result.stale)

    def add_labels(self, batch: list[Label], now: float) -> LabelResult:
        total = LabelResult()
        for _ in range(_RETRIES):
            result, changed = self._label_pass(batch, now)
            total.joined += result.joined
            total.duplicate += result.duplicate
            total.late += result.late
            total.unknown += result.unknown
            if not changed:
                return total
            # Again, once per changed id (its duplicates within the batch were counted already)
            firsts: dict[str, Label] = {}
            for lab in batch:
                if lab.id in changed:
                    firsts.setdefault(lab.id, lab)
            batch = list(firsts.values())
        raise redis.RedisError(f"{len(batch)} labels kept racing with new predictions of their ids")

    def _label_pass(self, batch: list[Label], now: float) -> tuple[LabelResult, set[str]]:
        ids = list({lab.id for lab in batch})
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(self.k["pending"], ids)
        pipe.hmget(self.k["done"], ids)
        recs, states = pipe.execute() if ids else ([], [])
        pending = {i: r for i, r in zip(ids, recs, strict=True) if r is not None}
        done = {i: s for i, s in zip(ids, states, strict=True) if s is not None}
        result, seen = LabelResult(), set[str]()
        skeys: dict[bytes, int] = {}
        pkeys: dict[str, int] = {}
        items: list[Any] = []
        n_items = 0
        start = len(f"{self.prefix}:s:")
        for lab in batch:
            if lab.id in seen or done.get(lab.id) == b"1":
                result.duplicate += 1
            elif lab.id in pending:
                value = pending[lab.id]
                arms: list[Any] = []
                losses: list[tuple[SeriesKey, float]] = []
                for rec in records(value):
                    nl = rec.index(b"\n")
                    (served_at,) = struct.unpack_from("<d", rec, nl + 1)
                    try:
                        s = score(rec[nl + 9 :], lab.label, served_at, now, lab.token)
                    except ValueError as e:
                        where = "token_nll" if lab.token is not None else "label"
                        raise FieldError(f"{lab.field}.{where}", str(e)) from None
                    idx = skeys.setdefault(rec[:nl], len(skeys) + 1)
                    arms += [
                        idx,
                        repr(s.loss),
                        repr(s.loss * s.loss),
                        s.bucket,
                        s.delay_bucket,
                        repr(s.delay),
                        *_cal_args(s.cal),
                        *_token_args(s.token),
                    ]
                    losses.append((series_key(rec[start:nl].decode()), s.loss))
                pairs: list[Any] = []
                for key, la, lb in pair_losses(losses):
                    idx = pkeys.setdefault(self._pkey(key), len(pkeys) + 1)
                    pairs += [idx, repr(la), repr(lb), repr((lb - la) * (lb - la))]
                items += [lab.id, len(value), len(arms) // ARM_FIELDS, len(pairs) // 4, *arms, *pairs]
                n_items += 1
            elif lab.id in done:
                result.late += 1
            else:
                result.unknown += 1
            seen.add(lab.id)
        k = self.k
        keys: list[str | bytes] = [
            k["pending"], k["deadlines"], k["done"], k["forget"], k["outcomes"], k["pairs"], k["npending"],
            *skeys, *pkeys,
        ]  # fmt: skip
        forget = repr(now + self.ttl_s + self.grace_s)
        args = [
            forget,
            n_items,
            result.duplicate,
            result.late,
            result.unknown,
            len(skeys),
            repr(self._wall()),
            *items,
        ]
        joined, dup, late, unknown, *changed = self._label(keys=keys, args=args)
        ids_changed = {c.decode() if isinstance(c, bytes) else str(c) for c in changed}
        return LabelResult(int(joined), int(dup), int(late), int(unknown)), ids_changed

    def expire(self, now: float) -> int:
        total = 0
        k = self.k
        while True:
            n = int(self._expire(keys=[k["pending"], k["deadlines"], k["done"], k["forget"], k["npending"]],
                                 args=[repr(now), _EXPIRE_BATCH, repr(self.grace_s)]))  # fmt: skip
            total += n
            if n < _EXPIRE_BATCH:
                return total

    def snapshot(self) -> dict[SeriesKey, Series]:
        names = sorted(self.r.smembers(self.k["series"]))
        pipe = self.r.pipeline(transaction=True)  # MULTI: one consistent view of every series
        for name in names:
            pipe.hgetall(name)
        out: dict[SeriesKey, Series] = {}
        start = len(f"{self.prefix}:s:")
        for name, h in zip(names, pipe.execute(), strict=True):
            text = name.decode() if isinstance(name, bytes) else str(name)
            out[series_key(text[start:])] = _series(h)
        return out

    def pairs(self) -> dict[PairKey, PairSums]:
        names = sorted(self.r.smembers(self.k["pairs"]))
        pipe = self.r.pipeline(transaction=True)
        for name in names:
            pipe.hgetall(name)
        out: dict[PairKey, PairSums] = {}
        start = len(f"{self.prefix}:p:")
        for name, h in zip(names, pipe.execute(), strict=True):
            text = name.decode() if isinstance(name, bytes) else str(name)
            out[pair_key(text[start:])] = PairSums(
                float(h.get(b"created", 0.0)), int(h.get(b"count", 0)), float(h.get(b"sum_a", 0.0)),
                float(h.get(b"sum_b", 0.0)), float(h.get(b"sumsq", 0.0)),
            )  # fmt: skip
        return out

    def exporter(self) -> bool:
        """Whether this replica exports the shared counters now (one replica at a time does, or
        Prometheus, scraping every replica, would count each prediction once per replica). The lease
        lasts `lease_ms` and is renewed by each scrape; when its holder stops, another takes over and
        the operator's counter reader continues from the new target's first sample (same `_created`)."""
        return bool(self._lease(keys=[f"{self.prefix}:exporter"], args=[self.replica, self.lease_ms]))

    def pending(self) -> int:
        n = self.r.get(self.k["npending"])  # absent until a script ran on a store written before arms
        return int(n) if n is not None else int(self.r.zcard(self.k["deadlines"]))

    def outcomes(self) -> dict[str, int]:
        h = self.r.hgetall(self.k["outcomes"])
        return {name: int(h.get(name.encode(), 0)) for name in OUTCOMES}

    def close(self) -> None:
        self.r.close()


def _cal_args(cal: Calibrated | None) -> list[str | int]:
    """A class label's confidence bin, confidence, correct and Brier score (bin -1: a token label)."""
    if cal is None:
        return [-1, "0", 0, "0"]
    return [cal.bin, repr(cal.confidence), cal.correct, repr(cal.brier)]


def _token_args(token: tuple[float, int] | None) -> list[str | int]:
    """A token label's increments of the six token counters (zeros for a class label)."""
    if token is None:
        return [0, "0", 0, "0", 0, "0"]
    s, t = token
    return [1, repr(s), t, repr(s * s), t * t, repr(s * t)]


def _series(h: dict[bytes, bytes]) -> Series:
    def i(name: str) -> int:
        return int(h.get(name.encode(), 0))

    def f(name: str) -> float:
        return float(h.get(name.encode(), 0.0))

    bins = range(CALIBRATION_BINS)
    return Series(
        f("created"), i("predictions"), i("count"), f("sum"), f("sumsq"),
        [i(f"b{j}") for j in range(len(LOSS_BUCKETS) + 1)],
        [i(f"d{j}") for j in range(len(DELAY_BUCKETS) + 1)],
        f("delay_sum"), {r: i(f"expired:{r}") for r in EXPIRY_REASONS},
        [i(f"k{j}") for j in bins], [f(f"c{j}") for j in bins], [i(f"q{j}") for j in bins],
        [f(f"r{j}") for j in bins],
        TokenSums(
            f("created"), i("tok_n"), f("tok_nats"), i("tok_tokens"), f("tok_nats_sq"), i("tok_tokens_sq"),
            f("tok_nats_tokens"),
        ) if i("tok_n") else None,
    )  # fmt: skip
