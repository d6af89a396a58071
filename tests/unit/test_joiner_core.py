"""The joiner's pure parts and its SQLite store against a ledger: losses and buckets are
lossgate.instrument's, and any sequence of predictions, labels, redeliveries, expiries and restarts
leaves the counters equal to what a ledger says."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossgate.instrument import LOSS_BUCKETS, cross_entropy
from lossgate.instrument.losses import log_probs
from lossgate.joiner import parse
from lossgate.joiner.accounting import DELAY_BUCKETS, score
from lossgate.joiner.records import FieldError, Full
from lossgate.joiner.sqlite_store import SqliteStore
from lossgate.joiner.store import Store

T0 = 1_800_000_000.0
TTL = 100.0


def _pred(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "model": "m", "version": "v1", "probabilities": 0.5} | fields


def _batch(n: int, prefix: str) -> dict[str, Any]:
    return {"predictions": [_pred(id=f"{prefix}{i}") for i in range(n)]}


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    probs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
    label=st.integers(0, 5),
    delay=st.floats(0.0, 3e6),
)
def test_loss_and_buckets_are_the_instrument_ones(probs: list[float], label: int, delay: float) -> None:
    # Given a served distribution (normalised) and a label within its classes
    p = np.asarray(probs) + 1e-3
    p = (p / p.sum()).tolist()
    label %= len(p)
    # When the joiner scores it
    s = score(log_probs(probabilities=p).tobytes(), label, T0, T0 + delay)
    # Then the loss is lossgate.instrument's cross-entropy and the buckets are `le` buckets
    assert s.loss == cross_entropy(label, probabilities=p)
    assert s.bucket == next((i for i, b in enumerate(LOSS_BUCKETS) if s.loss <= b), len(LOSS_BUCKETS))
    assert s.delay == (T0 + delay) - T0
    assert s.delay_bucket == next(
        (i for i, b in enumerate(DELAY_BUCKETS) if s.delay <= b), len(DELAY_BUCKETS)
    )


class Ledger:
    """What the counters must say, kept the simplest way."""

    def __init__(self) -> None:
        self.served: dict[str, tuple[float, list[float]]] = {}
        self.labelled: dict[str, float] = {}
        self.expired: set[str] = set()
        self.calibration: dict[str, tuple[int, float, int, float]] = {}  # bin, confidence, correct, Brier

    def predict(self, pid: str, served_at: float, probs: list[float], now: float) -> None:
        if pid not in self.served and served_at + TTL > now:
            self.served[pid] = (served_at, probs)

    def label(self, pid: str, y: int) -> None:
        if pid in self.served and pid not in self.labelled and pid not in self.expired:
            probs = self.served[pid][1]
            self.labelled[pid] = cross_entropy(y, probabilities=probs)
            top = max(range(len(probs)), key=lambda k: probs[k])
            brier = sum((p - (1.0 if k == y else 0.0)) ** 2 for k, p in enumerate(probs))
            self.calibration[pid] = (min(int(probs[top] * 15), 14), probs[top], int(top == y), brier)

    def expire(self, now: float) -> None:
        for pid, (served_at, _) in self.served.items():
            if pid not in self.labelled and served_at + TTL <= now:
                self.expired.add(pid)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("predict"), st.integers(0, 15), st.floats(0.05, 0.95), st.floats(0, 50)),
        st.tuples(st.just("label"), st.integers(0, 15), st.integers(0, 1), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(0), st.just(0.0), st.floats(0, 80)),
        st.tuples(st.just("restart"), st.just(0), st.just(0.0), st.just(0.0)),
    ),
    max_size=60,
)


def check_against_ledger(open_store: Callable[[], Store], ops: list[tuple[str, int, float, float]]) -> None:
    """Run `ops` on a store and on a ledger; the counters must agree (shared with the Redis test)."""
    store, ledger, now = open_store(), Ledger(), T0
    # When predictions (some redelivered, some served long ago), labels (some twice, some late),
    # clock advances with expiry passes and restarts happen in any order
    for op, i, x, t in ops:
        pid = f"p{i}"
        if op == "predict":
            served_at = now - t * 3  # up to 150 s ago: some stale on arrival
            item = {"id": pid, "served_at": served_at, "probabilities": [1 - x, x]}
            store.add_predictions(parse.predictions({"predictions": [_pred(**item)]}, now), now)
            ledger.predict(pid, served_at, [1 - x, x], now)
        elif op == "label":
            store.add_labels(parse.labels({"labels": [{"id": pid, "label": i % 2}]}), now)
            ledger.label(pid, i % 2)
        elif op == "advance":
            now += t
            store.expire(now)
            ledger.expire(now)
        else:
            store.close()
            store = open_store()
    # Then predictions, labelled, expired, the loss sum and the pending count equal the ledger's
    (s,) = store.snapshot().values() or [None]
    if s is None:
        assert not ledger.served
        store.close()
        return
    assert s.predictions == len(ledger.served)
    assert s.count == len(ledger.labelled)
    assert s.expired["ttl"] == len(ledger.expired)
    assert s.pending == store.pending() == len(ledger.served) - len(ledger.labelled) - len(ledger.expired)
    assert math.isclose(s.sum, math.fsum(ledger.labelled.values()), rel_tol=1e-12, abs_tol=1e-12)
    assert sum(s.buckets) == s.count
    # And the reliability counters per confidence bin equal the ledger's, bin by bin
    for b in range(15):
        rows = [c for c in ledger.calibration.values() if c[0] == b]
        assert s.cal_count[b] == len(rows)
        assert s.cal_correct[b] == sum(r[2] for r in rows)
        assert math.isclose(s.cal_confidence[b], math.fsum(r[1] for r in rows), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(s.cal_brier[b], math.fsum(r[3] for r in rows), rel_tol=1e-12, abs_tol=1e-12)
    store.close()


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_sqlite_store_equals_the_ledger(tmp_path: Path, ops: list[tuple[str, int, float, float]]) -> None:
    # Given a fresh store file (TTL 100 s) and a ledger
    db = tmp_path / f"j{abs(hash(tuple(ops)))}.db"
    db.unlink(missing_ok=True)
    check_against_ledger(lambda: SqliteStore(db, capacity=1000, ttl_s=TTL, wall=lambda: T0), ops)


def test_capacity_refuses_the_whole_batch(tmp_path: Path) -> None:
    # Given a store with room for 3
    store = SqliteStore(tmp_path / "j.db", capacity=3, ttl_s=TTL)
    doc = {
        "predictions": [
            {"id": f"p{i}", "model": "m", "version": "v1", "probabilities": 0.5} for i in range(2)
        ]
    }
    store.add_predictions(parse.predictions(doc, T0), T0)
    # When a batch of 2 more arrives; Then it is refused whole and nothing of it is stored
    doc2 = {
        "predictions": [
            {"id": f"q{i}", "model": "m", "version": "v1", "probabilities": 0.5} for i in range(2)
        ]
    }
    with pytest.raises(Full, match="capacity of 3"):
        store.add_predictions(parse.predictions(doc2, T0), T0)
    assert store.pending() == 2
    assert next(iter(store.snapshot().values())).predictions == 2


def test_out_of_range_label_refuses_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    # Given two pending binary predictions
    store = SqliteStore(tmp_path / "j.db", capacity=10, ttl_s=TTL)
    doc = {
        "predictions": [
            {"id": f"p{i}", "model": "m", "version": "v1", "probabilities": 0.5} for i in range(2)
        ]
    }
    store.add_predictions(parse.predictions(doc, T0), T0)
    # When a batch labels the first correctly and the second with class 2
    with pytest.raises(FieldError) as err:
        store.add_labels(parse.labels({"labels": [{"id": "p0", "label": 1}, {"id": "p1", "label": 2}]}), T0)
    # Then the error names the field and neither label counted
    assert err.value.field == "labels[1].label"
    assert store.pending() == 2
    assert next(iter(store.snapshot().values())).count == 0


def _one(**fields: Any) -> dict[str, Any]:
    return {"predictions": [_pred(**fields)]}


BAD: list[tuple[Any, str]] = [
    ({}, "predictions"),
    ({"predictions": {}}, "predictions"),
    ({"predictions": [1]}, "predictions[0]"),
    ({"predictions": [{"model": "m", "version": "v", "probabilities": 0.5}]}, "predictions[0].id"),
    ({"predictions": [{"id": "a", "version": "v", "probabilities": 0.5}]}, "predictions[0].model"),
    ({"predictions": [{"id": "a", "model": "m", "probabilities": 0.5}]}, "predictions[0].version"),
    ({"predictions": [{"id": "a", "model": "m", "version": "v"}]}, "predictions[0]"),
    (_one(probabilities=1.5), "predictions[0].probabilities"),
    (_one(probabilities=[0.5, None]), "predictions[0].probabilities"),
    (_one(probabilities=None, logits=["x"]), "predictions[0]"),
    (_one(logits=[1.0], probabilities=0.3), "predictions[0]"),
    (_one(id="a" * 300), "predictions[0].id"),
    (_one(id=True), "predictions[0].id"),
    (_one(model="m\n"), "predictions[0].model"),
    (_one(version=""), "predictions[0].version"),
    (_one(**{"class": ["gold"]}), "predictions[0].class"),
    (_one(served_at="yesterday"), "predictions[0].served_at"),
    (_one(served_at="2026-01-01T00:00:00"), "predictions[0].served_at"),
    (_one(served_at=T0 + 1e6), "predictions[0].served_at"),
    (_one(served_at=-5), "predictions[0].served_at"),
    ({"predictions": [_pred()] * 10_001}, "predictions"),
    ({"labels": [{"id": "a", "label": -1}]}, "labels[0].label"),
    ({"labels": [{"id": "a", "label": 1.5}]}, "labels[0].label"),
    ({"labels": [{"id": "a", "label": "1"}]}, "labels[0].label"),
    ({"labels": [{"id": {"x": 1}, "label": 1}]}, "labels[0].id"),
    ({"labels": [{"id": "a", "label": 1}, "b"]}, "labels[1]"),
]


@pytest.mark.parametrize(("doc", "field"), BAD, ids=[f for _, f in BAD])
def test_malformed_batches_name_the_field(doc: dict[str, Any], field: str) -> None:
    # When a malformed batch is parsed; Then the error names the offending field
    with pytest.raises(FieldError) as err:
        parse.labels(doc) if "labels" in doc else parse.predictions(doc, T0)
    assert err.value.field == field


def test_json_constants_and_deep_nesting_are_refused() -> None:
    for body in (b'{"predictions": [NaN]}', b"[" * 100_000, b"\xff\xfe", b'{"a": Infinity}'):
        with pytest.raises(FieldError) as err:
            parse.loads(body)
        assert err.value.field == "body"


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    width=st.integers(1, 12),
    n=st.integers(1, 40),
    logits=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batched_log_probs_are_bit_identical_to_one_at_a_time(
    width: int, n: int, logits: bool, seed: int
) -> None:
    # Given n predictions of one width (probabilities or logits)
    rng = np.random.default_rng(seed)
    x = (
        rng.normal(0, 8, (n, width))
        if logits
        else (rng.dirichlet(np.ones(width), n) if width > 1 else rng.random((n, 1)))
    )
    # When the joiner turns the batch into log-probabilities at once
    rows = parse.score_rows([("logits" if logits else "probabilities", "f", r.tolist()) for r in x])
    # Then every row is, bit for bit, what lossgate.instrument.log_probs gives for that prediction alone
    for r, got in zip(x, rows, strict=True):
        one = log_probs(**({"logits": r} if logits else {"probabilities": r}))
        assert got == one.tobytes()
