"""Paired counters: when two versions of one model predicted the same request id (mirrored
traffic), its label joins both and counts d = loss(b) - loss(a). The SQLite store against a ledger
over any sequence of predictions per arm, labels, redeliveries, expiries and restarts; the Redis
test (tests/joiner/test_joiner_pairs_redis.py) runs the same check on a real redis-server."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossgate.instrument import cross_entropy
from lossgate.joiner import parse
from lossgate.joiner.accounting import pair_losses
from lossgate.joiner.exposition import paired_families
from lossgate.joiner.sqlite_store import SqliteStore
from lossgate.joiner.store import Store
from tests.unit.test_joiner_core import T0, TTL

VERSIONS = ("v1", "v2")


class PairLedger:
    """Per (id, version): what was served; per id: its deadline (its first arm's) and its fate."""

    def __init__(self) -> None:
        self.served: dict[tuple[str, str], list[float]] = {}
        self.deadline: dict[str, float] = {}
        self.losses: dict[tuple[str, str], float] = {}
        self.labelled: set[str] = set()
        self.expired: dict[str, int] = {}  # id -> arms expired

    def done(self, pid: str) -> bool:
        return pid in self.labelled or pid in self.expired

    def predict(self, pid: str, version: str, served_at: float, probs: list[float], now: float) -> None:
        if (pid, version) in self.served or self.done(pid) or served_at + TTL <= now:
            return
        self.served[(pid, version)] = probs
        self.deadline.setdefault(pid, served_at + TTL)

    def label(self, pid: str, y: int) -> None:
        if self.done(pid) or pid not in self.deadline:
            return
        self.labelled.add(pid)
        for v in VERSIONS:
            if (pid, v) in self.served:
                self.losses[(pid, v)] = cross_entropy(y, probabilities=self.served[(pid, v)])

    def expire(self, now: float) -> None:
        for pid, due in self.deadline.items():
            if not self.done(pid) and due <= now:
                self.expired[pid] = sum((pid, v) in self.served for v in VERSIONS)

    def pairs(self) -> list[tuple[float, float]]:
        return [
            (self.losses[(p, "v1")], self.losses[(p, "v2")])
            for p in sorted(self.labelled)
            if (p, "v1") in self.losses and (p, "v2") in self.losses
        ]


_ID = st.integers(0, 5)
_MIRROR = st.tuples(st.just("mirror"), _ID, st.just(0), st.floats(0.05, 0.95), st.floats(0, 50))
_LABEL = st.tuples(st.just("label"), _ID, st.integers(0, 1), st.just(0.5), st.just(0.0))
PAIR_OPS = st.lists(
    st.one_of(  # mirrored predictions and labels weighted up, so that most examples form pairs
        _MIRROR,
        _MIRROR,
        _LABEL,
        st.tuples(st.just("predict"), _ID, st.integers(0, 1), st.floats(0.05, 0.95), st.floats(0, 50)),
        _LABEL,
        st.tuples(st.just("advance"), st.just(0), st.just(0), st.just(0.5), st.floats(0, 80)),
        st.tuples(st.just("restart"), st.just(0), st.just(0), st.just(0.5), st.just(0.0)),
    ),
    min_size=10,
    max_size=50,
)
PairOp = tuple[str, int, int, float, float]


def check_pairs_against_ledger(open_store: Callable[[], Store], ops: list[PairOp]) -> None:
    """Run `ops` on a store and on a ledger; unpaired and paired counters must agree."""
    store, ledger, now = open_store(), PairLedger(), T0
    # When predictions of either version for shared ids, labels, clock advances and restarts happen
    for op, i, v, x, t in ops:
        pid = f"p{i}"
        if op in ("predict", "mirror"):  # one arm, or both in one batch (the second less confident)
            served_at = now - t * 3
            both = [("v1", [1 - x, x]), ("v2", [0.5, 0.5])]
            arms = [(VERSIONS[v], [1 - x, x])] if op == "predict" else both
            docs = [
                {"id": pid, "model": "m", "version": ver, "served_at": served_at, "probabilities": probs}
                for ver, probs in arms
            ]
            store.add_predictions(parse.predictions({"predictions": docs}, now), now)
            for ver, probs in arms:
                ledger.predict(pid, ver, served_at, probs, now)
        elif op == "label":
            store.add_labels(parse.labels({"labels": [{"id": pid, "label": v}]}), now)
            ledger.label(pid, v)
        elif op == "advance":
            now += t
            store.expire(now)
            ledger.expire(now)
        else:
            store.close()
            store = open_store()
    # Then each arm's unpaired counters equal the ledger's
    snap = {key[1]: s for key, s in store.snapshot().items()}
    for version in VERSIONS:
        s = snap.get(version)
        served = [k for k in ledger.served if k[1] == version]
        if s is None:
            assert not served
            continue
        assert s.predictions == len(served)
        mine = [x for k, x in ledger.losses.items() if k[1] == version]
        assert s.count == len(mine)
        assert math.isclose(s.sum, math.fsum(mine), rel_tol=1e-12, abs_tol=1e-12)
    assert store.pending() == len(ledger.served) - len(ledger.losses) - sum(ledger.expired.values())
    # ... and the pair (v1, v2) counts exactly the ids both labelled, with their sums of loss and of d^2
    expect = ledger.pairs()
    pairs = store.pairs()
    if not expect:
        assert not pairs
    else:
        ((key, p),) = pairs.items()
        assert key == ("m", "v1", "v2", None)
        assert p.count == len(expect)
        tol = {"rel_tol": 1e-12, "abs_tol": 1e-9}
        assert math.isclose(p.sum_a, math.fsum(a for a, _ in expect), **tol)
        assert math.isclose(p.sum_b, math.fsum(b for _, b in expect), **tol)
        assert math.isclose(p.sumsq, math.fsum((b - a) ** 2 for a, b in expect), **tol)
    store.close()


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=PAIR_OPS)
def test_sqlite_pairs_equal_the_ledger(tmp_path: Path, ops: list[PairOp]) -> None:
    # Given a fresh store file (TTL 100 s) and a ledger
    db = tmp_path / f"j{abs(hash(tuple(ops)))}.db"
    db.unlink(missing_ok=True)
    check_pairs_against_ledger(lambda: SqliteStore(db, capacity=1000, ttl_s=TTL, wall=lambda: T0), ops)


def test_pair_losses_order_versions_and_keep_only_one_model() -> None:
    # Given one request predicted by v2 and v10 of model m, and by another model
    arms = [(("m", "v2", "gold"), 0.5), (("m", "v10", "gold"), 2.0), (("other", "v1", None), 9.0)]
    # When its pairs are formed; Then one pair (a < b by name), the class kept, losses in key order
    assert pair_losses(arms) == [(("m", "v10", "v2", "gold"), 2.0, 0.5)]
    # ... and a class the two arms disagree on is dropped
    assert pair_losses([(("m", "a", "x"), 1.0), (("m", "b", "y"), 1.5)]) == [
        (("m", "a", "b", None), 1.0, 1.5)
    ]


def test_paired_series_are_exported_in_both_orientations(tmp_path: Path) -> None:
    # Given ids 0..9 predicted by both versions and labelled
    store = SqliteStore(tmp_path / "j.db", capacity=100, ttl_s=TTL, wall=lambda: T0)
    for v, p in (("v1", 0.8), ("v2", 0.3)):
        docs = [{"id": f"r{i}", "model": "m", "version": v, "probabilities": p} for i in range(10)]
        store.add_predictions(parse.predictions({"predictions": docs}, T0), T0)
    result = store.add_labels(parse.labels({"labels": [{"id": f"r{i}", "label": 1} for i in range(10)]}), T0)
    # When the paired families are rendered
    assert result.joined == 10
    samples = {
        (s.name, s.labels["version"]): s.value for fam in paired_families(store.pairs()) for s in fam.samples
    }
    # Then each orientation carries its own version's loss sum, and the difference of the two is sum d
    la, lb = cross_entropy(1, probabilities=0.8), cross_entropy(1, probabilities=0.3)
    name = "model_prediction_loss_paired"
    assert samples[(f"{name}_count", "v2")] == samples[(f"{name}_count", "v1")] == 10
    assert math.isclose(
        samples[(f"{name}_sum", "v2")] - samples[(f"{name}_sum", "v1")], 10 * (lb - la), rel_tol=1e-12
    )
    assert math.isclose(samples[(f"{name}_diff_squared_sum", "v2")], 10 * (lb - la) ** 2, rel_tol=1e-12)
    assert samples[(f"{name}_created", "v2")] == T0
    store.close()


def test_a_store_written_before_arms_is_migrated(tmp_path: Path) -> None:
    # Given a SQLite file in the layout before arms, holding one pending prediction of series 1
    db = tmp_path / "old.db"
    store = SqliteStore(db, capacity=10, ttl_s=TTL, wall=lambda: T0)
    store.add_predictions(
        parse.predictions(
            {"predictions": [{"id": "x", "model": "m", "version": "v1", "probabilities": 0.5}]}, T0
        ),
        T0,
    )
    store.close()
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE old AS SELECT id, series, served_at, deadline, lp FROM pending; DROP TABLE pending;"
        "CREATE TABLE pending (id TEXT PRIMARY KEY, series INTEGER NOT NULL, served_at REAL NOT NULL,"
        " deadline REAL NOT NULL, lp BLOB NOT NULL) WITHOUT ROWID; INSERT INTO pending SELECT * FROM old;"
        "DROP TABLE old;"
    )
    con.close()
    # When it is opened again, the same arm is redelivered and the other version predicts the id
    store = SqliteStore(db, capacity=10, ttl_s=TTL, wall=lambda: T0)
    docs = [{"id": "x", "model": "m", "version": v, "probabilities": 0.25} for v in ("v1", "v2")]
    res = store.add_predictions(parse.predictions({"predictions": docs}, T0), T0)
    # Then the redelivery is a duplicate, the new arm is stored, and one label joins both
    assert (res.accepted, res.duplicate) == (1, 1)
    assert store.add_labels(parse.labels({"labels": [{"id": "x", "label": 1}]}), T0).joined == 1
    assert store.pairs()[("m", "v1", "v2", None)].count == 1
    store.close()
