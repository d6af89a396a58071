"""A language model's labels through a real `lossgate joiner` process (SQLite, or Debian's
redis-server): each label's reference continuation is scored by a tiny causal LM built from a
config, posted as a token label, and /metrics carries the token counters of the ledger exactly,
across a restart."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lossgate.conventions import TOKEN_COUNTER_SUFFIXES
from lossgate.instrument.lm import continuation_nll
from lossgate.joiner import JoinerClient
from lossgate.joiner.client import JoinerError
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.redis import RedisServer
from tests.joiner.helpers import value


@pytest.fixture(params=["sqlite", "redis"])
def joiner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JoinerProcess]:
    store: tuple[str, ...]
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = ("--redis", server.url, "--export-lease", "1s")  # a restart takes the lease over soon
    else:
        store = ("--sqlite", str(tmp_path / "joiner.db"))
    j = JoinerProcess.start(tmp_path / "joiner", *store)
    yield j
    j.stop()


def _model(seed: int) -> Any:
    torch.manual_seed(seed)
    model: Any = GPT2LMHeadModel(GPT2Config(vocab_size=61, n_positions=48, n_embd=16, n_layer=1, n_head=2))
    return model.eval()


def test_token_labels_export_the_ledgers_counters(joiner: JoinerProcess) -> None:
    # Given two versions of a language model (tiny GPT-2s, different weights) and 30 requests each,
    # logged to the joiner as token_loss predictions
    client, rng = JoinerClient(joiner.url), np.random.default_rng(3)
    models = {"v1": _model(1), "v2": _model(2)}
    ledger: dict[str, list[tuple[float, int]]] = {"v1": [], "v2": []}
    for version, model in models.items():
        preds = [
            {"id": f"{version}-{i}", "model": "chat", "version": version, "token_loss": True}
            for i in range(30)
        ]
        client.predictions(preds)
        # When each label (the accepted text) arrives, the server scores it and posts the token label
        for i in range(30):
            prompt = rng.integers(0, 61, int(rng.integers(1, 6))).tolist()
            reference = rng.integers(0, 61, int(rng.integers(1, 20))).tolist()
            nll, tokens = continuation_nll(model, prompt, reference)
            assert client.token_label(f"{version}-{i}", nll, tokens)["joined"] == 1
            ledger[version].append((nll, tokens))
    # And a classifier's labelled prediction beside them (the reliability counters are its alone)
    client.predictions([{"id": "c1", "model": "clf", "version": "v1", "probabilities": [0.3, 0.7]}])
    assert client.label("c1", 1)["joined"] == 1
    # Then each version's six token counters are the ledger's sums, before and after a restart
    for restarted in (False, True):
        if restarted:
            joiner.stop()
            joiner.restart()
            # (a Redis replica exports once it holds the exporter lease, which the old one let lapse)
            wait_until(lambda: value(joiner.metrics(), "lossgate_joiner_exporter") == 1, 30, "the lease")
        text = joiner.metrics()
        for version, rows in ledger.items():
            want = dict(
                zip(
                    TOKEN_COUNTER_SUFFIXES,
                    (
                        len(rows), math.fsum(s for s, _ in rows), sum(t for _, t in rows),
                        math.fsum(s * s for s, _ in rows), sum(t * t for _, t in rows),
                        math.fsum(s * t for s, t in rows),
                    ),
                    strict=True,
                )
            )  # fmt: skip
            for suffix, expected in want.items():
                got = value(text, f"model_token_nll_{suffix}", model="chat", version=version)
                assert got == pytest.approx(expected, rel=1e-12)
            # And the request-level loss is each request's NLL per token (the per-request judge's input)
            per_request = value(text, "model_prediction_loss_sum", model="chat", version=version)
            assert per_request == pytest.approx(math.fsum(s / t for s, t in rows), rel=1e-12)
            # And token labels have no class distribution: they count no reliability counters
            assert value(text, "model_prediction_calibration_count_total", model="chat", version=version) == 0
        assert value(text, "model_prediction_calibration_count_total", model="clf") == 1
        assert value(text, "model_prediction_calibration_correct_total", model="clf", bin="10") == 1


def test_mismatched_labels_are_refused_naming_the_field(joiner: JoinerProcess) -> None:
    # Given a classifier's prediction and a language model's
    client = JoinerClient(joiner.url)
    client.predictions([{"id": "c1", "model": "m", "version": "v1", "probabilities": [0.3, 0.7]}])
    client.predictions([{"id": "t1", "model": "chat", "version": "v1", "token_loss": True}])
    # When each gets the other kind of label, or a token label outside the bounds
    # Then each is refused with the field named, and nothing is counted
    with pytest.raises(JoinerError) as e1:
        client.token_label("c1", 2.0, 3)
    assert e1.value.field == "labels[0].token_nll"
    with pytest.raises(JoinerError) as e2:
        client.label("t1", 1)
    assert e2.value.field == "labels[0].label"
    with pytest.raises(JoinerError) as e3:
        client.token_label("t1", 100.0, 2)  # more than 13.8 nats a token
    assert e3.value.field == "labels[0].token_nll"
    assert value(joiner.metrics(), "model_token_nll_requests_total") == 0
