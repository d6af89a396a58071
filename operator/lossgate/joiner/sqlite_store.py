"""The embedded store: SQLite in WAL mode, one writer (this process), every change one transaction.

Tables: `pending` (predictions waiting for a label, with their log-probabilities, one row per id and
arm: mirrored traffic gives one id two versions), `done` (ids already labelled or expired, kept until
`deadline + grace` so that redeliveries are recognised), `series` (the exported counters, JSON,
written in the same transaction as the rows they count), `pairs` (the paired counters of ids two
versions predicted) and `outcomes`. The counters are also held in memory (authoritative only after
a commit), so a scrape reads no disk.

Durability: with synchronous=NORMAL a committed transaction survives the process being killed
(kill -9, OOM); FULL also survives a power loss, at a throughput cost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lossgate.joiner import serialize
from lossgate.joiner.accounting import PairSums, Scored, Series, pair_losses, score
from lossgate.joiner.records import (
    FieldError,
    Full,
    Label,
    LabelResult,
    PairKey,
    Prediction,
    PredictResult,
    SeriesKey,
    arm,
    pair_key,
    pair_name,
    series_name,
)
from lossgate.joiner.records import series_key as parse_series_key
from lossgate.joiner.store import OUTCOMES, first_seen, outcome_deltas

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
  id TEXT NOT NULL, arm TEXT NOT NULL, series INTEGER NOT NULL, served_at REAL NOT NULL,
  deadline REAL NOT NULL, lp BLOB NOT NULL, PRIMARY KEY (id, arm)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_deadline ON pending(deadline);
CREATE TABLE IF NOT EXISTS done (
  id TEXT PRIMARY KEY, outcome INTEGER NOT NULL, forget_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS done_forget ON done(forget_at);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (name TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
"""
# A file written before pending rows had an arm: the arm is the series' model and version (arm()).
_MIGRATE_ARM = """
BEGIN IMMEDIATE;
ALTER TABLE pending RENAME TO pending_v1;
DROP INDEX IF EXISTS pending_deadline;
CREATE TABLE pending (
  id TEXT NOT NULL, arm TEXT NOT NULL, series INTEGER NOT NULL, served_at REAL NOT NULL,
  deadline REAL NOT NULL, lp BLOB NOT NULL, PRIMARY KEY (id, arm)) WITHOUT ROWID;
INSERT INTO pending SELECT p.id, json_extract(s.name, '$[0]') || char(31) || json_extract(s.name, '$[1]'),
  p.series, p.served_at, p.deadline, p.lp FROM pending_v1 p JOIN series s ON s.id = p.series;
DROP TABLE pending_v1;
COMMIT;
"""
_LABELLED, _EXPIRED = 1, 2
_CHUNK = 500  # ids per IN (...) query
_EXPIRE_BATCH = 5000
_WAL_RESTART = 32 * 1024 * 1024


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


class SqliteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        capacity: int = 1_000_000,
        ttl_s: float = 14 * 86400.0,
        grace_s: float = 86400.0,
        synchronous: str = "NORMAL",
        checkpoint_every_s: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or ttl_s <= 0 or grace_s < 0:
            raise ValueError("capacity must be >= 1, ttl_s > 0 and grace_s >= 0")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.capacity, self.ttl_s, self.grace_s = capacity, float(ttl_s), float(grace_s)
        self._wall = wall
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        # Checkpoints (copying the WAL into the database file, with its fsync) run in a thread of
        # their own, so a commit never waits for one: the writer only appends to the WAL.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(f"PRAGMA journal_size_limit={_WAL_RESTART}")
        self._db.executescript(_SCHEMA)
        if "arm" not in {r[1] for r in self._db.execute("PRAGMA table_info(pending)")}:
            self._db.executescript(_MIGRATE_ARM)
            self._db.executescript(_SCHEMA)
        self._ids: dict[SeriesKey, int] = {}
        self._series: dict[int, Series] = {}
        for sid, name, state in self._db.execute("SELECT id, name, state FROM series"):
            self._ids[parse_series_key(name)] = sid
            self._series[sid] = serialize.loads(state)
        self._pairs = {
            pair_key(name): serialize.loads_pair(state)
            for name, state in self._db.execute("SELECT * FROM pairs")
        }
        self._outcomes = dict.fromkeys(OUTCOMES, 0) | dict(self._db.execute("SELECT name, n FROM outcomes"))
        self._pending = sum(s.pending for s in self._series.values())
        self._created: list[SeriesKey] = []
        self._staged: dict[str, int] = {}
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoints,
            args=(str(path), checkpoint_every_s),
            name="sqlite-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    def _checkpoints(self, path: str, every_s: float) -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        try:
            while not self._stop.wait(every_s):
                # PASSIVE never blocks the writer, but under a steady stream of commits the WAL never
                # gets fully copied and so never restarts from its beginning: past _WAL_RESTART bytes,
                # a RESTART checkpoint holds the writer for the few milliseconds of one second's writes.
                wal = Path(f"{path}-wal")
                big = wal.exists() and wal.stat().st_size > _WAL_RESTART
                db.execute(f"PRAGMA wal_checkpoint({'RESTART' if big else 'PASSIVE'})")
        finally:
            db.close()

    # Writes ---------------------------------------------------------------------------------------
    def add_predictions(self, batch: list[Prediction], now: float) -> PredictResult:
        with self._lock:
            ids = list({p.id for p in batch})
            known = self._select("SELECT id, arm, deadline FROM pending WHERE id IN ({})", ids)
            done = {r[0] for r in self._select("SELECT id FROM done WHERE id IN ({})", ids)}
            fresh, result = first_seen(batch, {(r[0], r[1]) for r in known}, done, now, self.ttl_s)
            if self._pending + len(fresh) > self.capacity:
                raise Full(self._pending, self.capacity, len(fresh))
            # The arms of one id share the first one's deadline, so that they expire together.
            deadline = {r[0]: r[2] for r in known}
            with self._txn() as changed:
                rows = []
                for p in fresh:
                    sid = self._series_id(p.key, changed)
                    self._changed(changed, sid).predictions += 1
                    due = deadline.setdefault(p.id, p.served_at + self.ttl_s)
                    rows.append((p.id, arm(p.key), sid, p.served_at, due, p.lp))
                self._db.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._count(outcome_deltas(result))
            self._pending += len(fresh)
            return result

    def add_labels(self, batch: list[Label], now: float) -> LabelResult:
        with self._lock:
            ids = list({lab.id for lab in batch})
            pending: dict[str, list[tuple[int, float, bytes]]] = {}
            for r in self._select("SELECT id, series, served_at, lp FROM pending WHERE id IN ({})", ids):
                pending.setdefault(r[0], []).append(r[1:])
            done: dict[str, int] = dict(self._select("SELECT id, outcome FROM done WHERE id IN ({})", ids))
            result, joined, seen = LabelResult(), list[tuple[str, int, Scored]](), set[str]()
            paired: list[tuple[PairKey, float, float]] = []
            keys = {sid: key for key, sid in self._ids.items()}
            for lab in batch:
                if lab.id in seen or done.get(lab.id) == _LABELLED:
                    result.duplicate += 1
                elif lab.id in pending:
                    arms = []
                    for sid, served_at, lp in pending[lab.id]:
                        try:
                            s = score(lp, lab.label, served_at, now, lab.token)
                        except ValueError as e:
                            where = "token_nll" if lab.token is not None else "label"
                            raise FieldError(f"{lab.field}.{where}", str(e)) from None
                        joined.append((lab.id, sid, s))
                        arms.append((keys[sid], s.loss))
                    paired += pair_losses(arms)
                    result.joined += 1
                elif lab.id in done:
                    result.late += 1
                else:
                    result.unknown += 1
                seen.add(lab.id)
            with self._txn() as changed:
                for _, sid, scored in joined:
                    self._changed(changed, sid).observe(scored)
                pairs = self._pair_changes(paired)
                self._db.executemany("DELETE FROM pending WHERE id = ?", [(j[0],) for j in joined])
                forget = now + self.ttl_s + self.grace_s  # past any redelivery's own deadline
                self._db.executemany(  # REPLACE: an arm may have expired before its sibling was labelled
                    "INSERT OR REPLACE INTO done VALUES (?, ?, ?)",
                    list({j[0]: (j[0], _LABELLED, forget) for j in joined}.values()),
                )
                self._count(outcome_deltas(lab=result))
            self._pairs.update(pairs)
            self._pending -= len(joined)
            return result

    def expire(self, now: float) -> int:
        """Count and remove predictions past their deadline, forget old `done` ids; returns how many."""
        total = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, series, deadline, arm FROM pending WHERE deadline <= ? "
                    "ORDER BY deadline LIMIT ?",
                    (now, _EXPIRE_BATCH),
                ).fetchall()
                with self._txn() as changed:
                    for _, sid, _, _ in rows:
                        self._changed(changed, sid).expired["ttl"] += 1
                    self._db.executemany(
                        "DELETE FROM pending WHERE id = ? AND arm = ?", [(r[0], r[3]) for r in rows]
                    )
                    self._db.executemany(  # IGNORE: the arms of one id expire together
                        "INSERT OR IGNORE INTO done VALUES (?, ?, ?)",
                        [(r[0], _EXPIRED, r[2] + self.grace_s) for r in rows],
                    )
                    self._db.execute("DELETE FROM done WHERE forget_at <= ?", (now,))
                self._pending -= len(rows)
            total += len(rows)
            if len(rows) < _EXPIRE_BATCH:
                return total

    # Reads ----------------------------------------------------------------------------------------
    def snapshot(self) -> dict[SeriesKey, Series]:
        with self._lock:
            return {key: self._series[sid].copy() for key, sid in self._ids.items()}

    def pairs(self) -> dict[PairKey, PairSums]:
        with self._lock:
            return {key: p.copy() for key, p in self._pairs.items()}

    def exporter(self) -> bool:
        return True  # one process owns the file

    def pending(self) -> int:
        with self._lock:
            return self._pending

    def outcomes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._outcomes)

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(10)
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    # Internals ------------------------------------------------------------------------------------
    def _select(self, sql: str, ids: list[str]) -> list[Any]:
        out: list[Any] = []
        for chunk in _chunks(ids):
            out += self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return out

    def _series_id(self, key: SeriesKey, changed: dict[int, Series]) -> int:
        sid = self._ids.get(key)
        if sid is None:
            new = Series(created=self._wall())
            cur = self._db.execute(
                "INSERT INTO series (name, state) VALUES (?, ?)", (series_name(key), serialize.dumps(new))
            )
            sid = int(cur.lastrowid or 0)
            self._ids[key], self._series[sid] = sid, new
            self._created.append(key)  # forgotten again if the transaction rolls back
            changed[sid] = new.copy()
        return sid

    def _pair_changes(self, paired: list[tuple[PairKey, float, float]]) -> dict[PairKey, PairSums]:
        """The new state of each pair `paired` moves, written in the open transaction; the memory
        takes it only after the commit."""
        out: dict[PairKey, PairSums] = {}
        for key, la, lb in paired:
            p = out.get(key)
            if p is None:
                old = self._pairs.get(key)
                p = out[key] = old.copy() if old is not None else PairSums(created=self._wall())
            p.observe(la, lb)
        self._db.executemany(
            "INSERT OR REPLACE INTO pairs VALUES (?, ?)",
            [(pair_name(k), serialize.dumps_pair(p)) for k, p in out.items()],
        )
        return out

    def _changed(self, changed: dict[int, Series], sid: int) -> Series:
        s = changed.get(sid)
        if s is None:
            s = changed[sid] = self._series[sid].copy()
        return s

    def _count(self, deltas: dict[str, int]) -> None:
        self._staged = {name: self._outcomes[name] + n for name, n in deltas.items()}
        self._db.executemany(
            "INSERT INTO outcomes VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = excluded.n",
            list(self._staged.items()),
        )

    class _Txn:
        def __init__(self, store: SqliteStore) -> None:
            self.store, self.changed = store, dict[int, Series]()

        def __enter__(self) -> dict[int, Series]:
            self.store._created, self.store._staged = [], {}
            self.store._db.execute("BEGIN IMMEDIATE")
            return self.changed

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            st = self.store
            if exc_type is None:
                try:
                    st._db.executemany(
                        "UPDATE series SET state = ? WHERE id = ?",
                        [(serialize.dumps(s), sid) for sid, s in self.changed.items()],
                    )
                    st._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                st._series.update(self.changed)
                st._outcomes.update(st._staged)
                return
            self._rollback()

        def _rollback(self) -> None:
            st = self.store
            if st._db.in_transaction:
                st._db.execute("ROLLBACK")
            for key in st._created:  # the memory holds only what is committed
                st._series.pop(st._ids.pop(key))

    def _txn(self) -> SqliteStore._Txn:
        return SqliteStore._Txn(self)

    def rows(self) -> Iterable[tuple[object, ...]]:  # for tests: the pending ids
        with self._lock:
            return self._db.execute("SELECT id FROM pending").fetchall()
