"""Series counters to and from JSON text (floats round-trip exactly through repr)."""

from __future__ import annotations

import json
from typing import Any

from lossgate.instrument.tokens import TokenSums
from lossgate.joiner.accounting import EXPIRY_REASONS, PairSums, Series

_TOKEN_FIELDS = ("n", "nats", "tokens", "nats_squared", "tokens_squared", "nats_tokens")


def dumps(s: Series) -> str:
    doc: dict[str, Any] = {
        "created": s.created, "predictions": s.predictions, "count": s.count, "sum": s.sum,
        "sumsq": s.sumsq, "buckets": s.buckets, "delay_buckets": s.delay_buckets,
        "delay_sum": s.delay_sum, "expired": s.expired, "cal_count": s.cal_count,
        "cal_confidence": s.cal_confidence, "cal_correct": s.cal_correct, "cal_brier": s.cal_brier,
    }  # fmt: skip
    if s.tokens is not None:  # only language models' series carry it (older states read without it)
        doc["tokens"] = [s.tokens.created] + [getattr(s.tokens, f) for f in _TOKEN_FIELDS]
    return json.dumps(doc, separators=(",", ":"))


def loads(text: str) -> Series:
    d: dict[str, Any] = json.loads(text)
    expired = dict.fromkeys(EXPIRY_REASONS, 0) | {str(k): int(v) for k, v in d["expired"].items()}
    tok = d.get("tokens")
    tokens = None
    if tok is not None:
        created, n, nats, t, nsq, tsq, nt = tok
        tokens = TokenSums(float(created), int(n), float(nats), int(t), float(nsq), int(tsq), float(nt))
    s = Series(
        float(d["created"]), int(d["predictions"]), int(d["count"]), float(d["sum"]), float(d["sumsq"]),
        [int(b) for b in d["buckets"]], [int(b) for b in d["delay_buckets"]], float(d["delay_sum"]), expired,
        tokens=tokens,
    )  # fmt: skip
    # A state written before the reliability counters existed starts them at 0.
    if "cal_count" in d:
        s.cal_count = [int(x) for x in d["cal_count"]]
        s.cal_confidence = [float(x) for x in d["cal_confidence"]]
        s.cal_correct = [int(x) for x in d["cal_correct"]]
        s.cal_brier = [float(x) for x in d["cal_brier"]]
    return s


def dumps_pair(p: PairSums) -> str:
    doc = {"created": p.created, "count": p.count, "sum_a": p.sum_a, "sum_b": p.sum_b, "sumsq": p.sumsq}
    return json.dumps(doc, separators=(",", ":"))


def loads_pair(text: str) -> PairSums:
    d: dict[str, Any] = json.loads(text)
    return PairSums(
        float(d["created"]), int(d["count"]), float(d["sum_a"]), float(d["sum_b"]), float(d["sumsq"])
    )
