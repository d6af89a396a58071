"""Mirrored traffic through two `lossgate joiner` replicas on one real Redis: the baseline's
predictions reach one replica, the canary's the other, arms and labels race each other, and the
exported paired counters still equal the ledger's (each pair counted once, both arms in it)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossgate.joiner import JoinerClient
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.redis import RedisServer
from tests.joiner.helpers import value

PAIRED = "model_prediction_loss_paired"


@pytest.fixture
def replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[JoinerProcess]]:
    js = [JoinerProcess.start(tmp_path / f"r{i}", "--redis", redis_server.url) for i in range(2)]
    yield js
    for j in js:
        j.stop()


def test_pairs_across_replicas_count_once(replicas: list[JoinerProcess]) -> None:
    # Given two replicas on one Redis, and 600 requests scored by v41 and v42 (mirrored)
    a, b = replicas
    rng = np.random.default_rng(9)
    base = rng.dirichlet([1.0, 1.0], 600)
    canary = 0.8 * base + 0.2 * rng.dirichlet([1.0, 1.0], 600)
    labels = rng.integers(0, 2, 600)

    def preds(version: str, probs: np.ndarray, lo: int, hi: int) -> list[dict[str, Any]]:
        return [
            {"id": f"r{j}", "model": "m", "version": version, "probabilities": probs[j].tolist()}
            for j in range(lo, hi)
        ]

    errors: list[BaseException] = []

    def run(fn: Any) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as e:  # surfaced by the main thread
                errors.append(e)

        t = threading.Thread(target=body)
        t.start()
        return t

    # When v41's predictions go to replica a and v42's to replica b at the same time, in batches of 50,
    # while labels for the first 400 ids go to both replicas as soon as their baseline prediction is in
    ca, cb = JoinerClient(a.url), JoinerClient(b.url)
    results: list[dict[str, int]] = []
    for lo in range(0, 600, 50):
        ca.predictions(preds("v41", base, lo, lo + 50))
        threads = [run(lambda lo=lo: cb.predictions(preds("v42", canary, lo, lo + 50)))]
        if lo < 400:
            batch = [{"id": f"r{j}", "label": int(labels[j])} for j in range(lo, lo + 50)]
            threads += [run(lambda c=c, batch=batch: results.append(c.labels(batch))) for c in (ca, cb)]
        for t in threads:
            t.join(30)
    assert not errors, errors
    # Then each label joined exactly once (the other delivery a duplicate)
    assert sum(r["joined"] for r in results) == 400
    assert sum(r["duplicate"] for r in results) == 400
    # ... and the pairs are the ids whose two predictions both arrived before their label joined
    page = next(p for p in (a.metrics(), b.metrics()) if value(p, "lossgate_joiner_exporter") == 1.0)
    n_pairs = value(page, f"{PAIRED}_count", version="v42", baseline_version="v41")
    n_v42 = value(page, "model_prediction_loss_count", version="v42")
    assert value(page, "model_prediction_loss_count", version="v41") == 400
    assert n_pairs == n_v42  # every labelled v42 prediction is in a pair (v41 always came first)
    assert 0 < n_pairs <= 400
    # ... and, since every labelled v42 prediction is in a pair, the pair's v42 loss sum is v42's own
    paired_c = value(page, f"{PAIRED}_sum", version="v42", baseline_version="v41")
    assert math.isclose(paired_c, value(page, "model_prediction_loss_sum", version="v42"), rel_tol=1e-12)
    # ... and the 200 unlabelled requests wait with both predictions each
    wait_until(lambda: a.get("/healthz")["pending"] == 400, 10, "both arms of 200 requests pending")
