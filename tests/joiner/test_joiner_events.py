"""`lossgate joiner` over HTTP as KServe's inference logger and label sources use it: CloudEvents
(v1 and v2 payloads, probabilities or logits, binary or multi-class), labels two simulated days
late, expiry by TTL, and hostile or malformed input refused with the field named and nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossgate.instrument import cross_entropy
from lossgate.joiner import JoinerClient
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.redis import RedisServer
from tests.joiner.helpers import REQUEST, event_headers, post, samples, value

DAY = 86400.0


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[JoinerProcess]:
    # (started as `lossgate joiner`, the subcommand; the other tests use `lossgate-joiner`'s module)
    j = JoinerProcess.start(
        tmp_path / "j", "--sqlite", str(tmp_path / "j.db"), "--capacity", "50", "--allow-clock-override",
        subcommand=True,
    )  # fmt: skip
    yield j
    j.stop()


def _event(
    j: JoinerProcess, ce_id: str, doc: object, query: str = "", **ext: str
) -> tuple[int, dict[str, object]]:
    status, body, _ = post(f"{j.url}/v1/events{query}", json.dumps(doc).encode(), event_headers(ce_id, **ext))
    return status, body


def test_kserve_events_v1_and_v2_probabilities_and_logits(joiner: JoinerProcess) -> None:
    # Given KServe's logger posting request and response events for an InferenceService "fraud"
    isvc = {"inferenceservicename": "fraud", "namespace": "ml", "component": "predictor"}
    # When a v1 response (2 instances, 3-class probabilities) arrives with its request event
    assert _event(joiner, "r1", {"instances": [[1, 2]]}, "?version=v41", ce_type=REQUEST, **isvc)[0] == 200
    v1 = {"predictions": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]}
    assert _event(joiner, "r1", v1, "?version=v41", **isvc)[1] == {"accepted": 2, "duplicate": 0, "stale": 0}
    # ... a v2 / Open Inference Protocol response with binary logits and its version in the payload
    v2 = {
        "model_name": "fraud", "model_version": "v42", "id": "r2",
        "outputs": [
            {"name": "label", "shape": [1], "datatype": "INT64", "data": [1]},
            {"name": "logits", "shape": [1, 1], "datatype": "FP32", "data": [2.5]},
        ],
    }  # fmt: skip
    assert _event(joiner, "r2", v2, **isvc)[1]["accepted"] == 1
    # ... a v2 response with a [2, 3] probability tensor, version from the canary endpoint attribute
    v2b = {
        "outputs": [
            {"name": "probs", "shape": [2, 3], "datatype": "FP64", "data": [0.2, 0.3, 0.5, 0.9, 0.05, 0.05]}
        ]
    }
    assert _event(joiner, "r3", v2b, endpoint="canary", **isvc)[1]["accepted"] == 2
    # ... the same response event again (a logger retry)
    assert _event(joiner, "r1", v1, "?version=v41", **isvc)[1] == {"accepted": 0, "duplicate": 2, "stale": 0}
    # ... and labels, by prediction id (`<ce-id>:<instance>` for multi-instance events), one as a CloudEvent
    client = JoinerClient(joiner.url)
    out = client.labels([{"id": "r1:0", "label": 0}, {"id": "r1:1", "label": 2}, {"id": "r3:1", "label": 1}])
    assert out == {"joined": 3, "duplicate": 0, "late": 0, "unknown": 0}
    status, body = _event(joiner, "lab-1", {"id": "r2", "label": 0}, ce_type="io.lossgate.label")
    assert (status, body["joined"]) == (200, 1)
    assert _event(joiner, "lab-1", {"id": "r2", "label": 0}, ce_type="io.lossgate.label")[1]["duplicate"] == 1

    # Then each series holds the loss lossgate.instrument computes for the same scores
    page = joiner.metrics()
    v41 = cross_entropy(0, probabilities=[0.7, 0.2, 0.1]) + cross_entropy(2, probabilities=[0.1, 0.1, 0.8])
    assert value(page, "model_prediction_loss_sum", model="fraud", version="v41") == v41
    assert value(page, "model_prediction_loss_sum", version="v42") == cross_entropy(0, logits=2.5)
    assert value(page, "model_prediction_loss_sum", version="canary") == cross_entropy(
        1, probabilities=[0.9, 0.05, 0.05]
    )
    assert value(page, "model_predictions_total", model="fraud") == 5
    assert value(page, "model_prediction_loss_count", model="fraud") == 4
    assert value(page, "model_prediction_pending", version="canary") == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_labels_two_simulated_days_late_and_expiry_by_ttl(
    backend: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Given a joiner with a 14-day TTL whose clock the test moves (no sleeping)
    store = ["--sqlite", str(tmp_path / "j.db")] if backend == "sqlite" else ["--redis", redis_server.url]
    j = JoinerProcess.start(
        tmp_path / "j", *store, "--ttl", "14d", "--allow-clock-override", "--expire-every", "0.2"
    )
    try:
        t0 = 1_900_000_000.0
        post(f"{j.url}/v1/clock", json.dumps({"now": t0}).encode())
        client = JoinerClient(j.url)
        preds = [
            {"id": f"p{i}", "model": "m", "version": "v1", "probabilities": 0.8, "served_at": t0}
            for i in range(10)
        ]
        assert client.predictions(preds)["accepted"] == 10
        # When 8 labels arrive two days later
        post(f"{j.url}/v1/clock", json.dumps({"now": t0 + 2 * DAY}).encode())
        assert client.labels([{"id": f"p{i}", "label": 1} for i in range(8)])["joined"] == 8
        # Then they join, and the label-delay histogram puts them between 2 and 3 days
        page = j.metrics()
        bucket = "model_prediction_label_delay_seconds_bucket"
        assert value(page, bucket, le="172800.0") == 0
        assert value(page, bucket, le="259200.0") == 8
        delay_sum = value(page, "model_prediction_label_delay_seconds_sum")
        assert 8 * 2 * DAY <= delay_sum < 8 * (2 * DAY + 60)  # plus the real seconds the test took
        assert value(page, "model_prediction_loss_count") == 8
        # When the clock passes the 14-day TTL of the other two
        post(f"{j.url}/v1/clock", json.dumps({"now": t0 + 14 * DAY + 1}).encode())

        def expired() -> float:
            return value(j.metrics(), "model_prediction_expired_total", reason="ttl")

        wait_until(lambda: expired() == 2, 20, "TTL expiry")
        # Then they are counted as expired (reason ttl), a label for one of them is "late", and a
        # prediction served before the TTL window is refused as stale
        assert value(j.metrics(), "model_prediction_pending") == 0
        assert client.labels([{"id": "p9", "label": 1}]) == {
            "joined": 0,
            "duplicate": 0,
            "late": 1,
            "unknown": 0,
        }
        assert client.predictions([preds[0] | {"id": "old"}])["stale"] == 1
        assert value(j.metrics(), "model_predictions_total") == 10
    finally:
        j.stop()


def _p(*items: dict[str, object]) -> bytes:
    base = {"id": "a", "model": "m", "version": "v", "probabilities": 0.5}
    return json.dumps({"predictions": [base | it for it in items]}).encode()


_ISVC = event_headers("e", inferenceservicename="m")
_NAN = b'{"predictions": [{"id": "a", "model": "m", "version": "v", "probabilities": NaN}]}'
_TWO_OUTPUTS = b'{"outputs": [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]}'
_BAD_SHAPE = b'{"outputs": [{"name": "probs", "shape": [2, 3], "data": [0.1, 0.9]}]}'
_NO_ID = {"ce-specversion": "1.0", "ce-type": "x", "ce-source": "s"}
HOSTILE: list[tuple[str, bytes, dict[str, str], str]] = [
    ("/v1/predictions", b"not json", {}, "body"),
    ("/v1/predictions", _NAN, {}, "body"),
    ("/v1/predictions", b"[" * 50_000 + b"]" * 50_000, {}, "body"),
    ("/v1/predictions", _p({"probabilities": [0.5, 2]}), {}, "predictions[0].probabilities"),
    ("/v1/predictions", _p({"id": "ok"}, {"id": "b", "model": {"$ne": 1}}), {}, "predictions[1].model"),
    ("/v1/predictions", _p({"probabilities": None, "logits": [1e300, -1e300, 1e400]}), {}, "body"),
    ("/v1/predictions", _p({"id": "x" * 10_000}), {}, "predictions[0].id"),
    ("/v1/labels", b'{"labels": [{"id": "x", "label": 99999}]}', {}, "labels[0].label"),
    ("/v1/labels", b'{"labels": "all"}', {}, "labels"),
    ("/v1/events", b"{}", _NO_ID, "header ce-id"),
    ("/v1/events", b"{}", _NO_ID | {"ce-id": "e", "ce-specversion": "9"}, "header ce-specversion"),
    ("/v1/events", b"{}", event_headers("e", "com.example.other"), "header ce-type"),
    ("/v1/events", b'{"predictions": [[0.5, 0.5]]}', event_headers("e"), "header ce-inferenceservicename"),
    ("/v1/events", b'{"predictions": [[0.5, 0.5]]}', _ISVC, "version"),
    ("/v1/events?version=v", b'{"predictions": [[0.5, 0.5]]}', _ISVC | {"ce-time": "soon"}, "header ce-time"),
    ("/v1/events?version=v", b'{"predictions": []}', _ISVC, "data.predictions"),
    ("/v1/events?version=v", b'{"nothing": 1}', _ISVC, "data"),
    ("/v1/events?version=v", _TWO_OUTPUTS, _ISVC, "outputs"),
    ("/v1/events?version=v", _BAD_SHAPE, _ISVC, "outputs[probs].data"),
    ("/v1/events?version=v&kind=scores", b'{"predictions": [[0.5, 0.5]]}', _ISVC, "kind"),
    (
        "/v1/events?version=v",
        b'{"predictions": [[0.5, 0.5], [0.2, 0.3, "x"]]}',
        _ISVC,
        "data.predictions[1].probabilities",
    ),
    ("/v1/events", b'{"label": 1}', event_headers("e", "io.lossgate.label"), "data.id"),
]


def test_hostile_and_malformed_input_is_refused_naming_the_field(joiner: JoinerProcess) -> None:
    # Given a joiner with one labelled and one pending prediction
    client = JoinerClient(joiner.url)
    client.predictions(
        [{"id": f"p{i}", "model": "m", "version": "v", "probabilities": 0.5} for i in range(2)]
    )
    client.labels([{"id": "p0", "label": 1}])
    before = {k: v for k, v in samples(joiner.metrics()).items() if k[0].startswith("model_")}
    # When each hostile request arrives; Then it gets a 400 naming the field
    for path, body, headers, field in HOSTILE:
        status, doc, _ = post(joiner.url + path, body, headers)
        assert (status, doc.get("field")) == (400, field), (path, body[:80], doc)
        assert field in str(doc["error"])
    # And a body past the size limit is refused before it is read
    status, _, _ = post(joiner.url + "/v1/predictions", b" " * (17 * 1024 * 1024))
    assert status == 413
    # And when the store is full (capacity 50) a batch is refused whole with 429 and Retry-After
    full = [{"id": f"f{i}", "model": "m", "version": "v", "probabilities": 0.5} for i in range(50)]
    status, doc, headers = post(joiner.url + "/v1/predictions", json.dumps({"predictions": full}).encode())
    assert (status, headers["Retry-After"]) == (429, "5")
    assert "capacity of 50" in str(doc["error"])
    # Then none of it wrote anything: every model_* series is as before
    after = {k: v for k, v in samples(joiner.metrics()).items() if k[0].startswith("model_")}
    assert after == before
