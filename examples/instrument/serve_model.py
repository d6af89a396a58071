"""A model server that exports lossgate's serving metrics: copy the LossRecorder lines into yours.

It serves a small logistic-regression fraud scorer (numpy) over HTTP, one WSGI app for everything:

    POST /predict   {"features": [8 floats]}          -> {"id": "...", "probabilities": [p0, p1]}
    POST /label     {"id": "...", "label": 0 or 1}    -> {"loss": 0.105} (or {"loss": null}: unknown id)
    GET  /metrics   Prometheus exposition (model_predictions_total, model_prediction_loss, ...)

Labels arrive later than predictions (a chargeback, a click, a human review): the recorder keeps each
prediction's probabilities until its label arrives (bounded by --capacity and --ttl), then observes
the per-request cross-entropy.

    python examples/instrument/serve_model.py --model fraud-scorer --version v42 --port 8080
    curl -s -XPOST localhost:8080/predict -d '{"features": [0.1, 0.2, 0, 0, 0, 0, 0, 1]}'
    curl -s -XPOST localhost:8080/label -d '{"id": "<id from above>", "label": 1}'
    curl -s localhost:8080/metrics | grep model_prediction_loss

--skew makes a deliberately worse model (a canary with a regression, to watch the operator roll back).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from lossgate.instrument import LossRecorder

FEATURES = 8


class Model:
    """Logistic regression with fixed weights; `skew` perturbs them (a worse model)."""

    def __init__(self, skew: float = 0.0, seed: int = 11) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=FEATURES) + skew * rng.normal(size=FEATURES)
        self.b = -1.0

    def predict_logit(self, x: np.ndarray) -> float:
        return float(x @ self.w + self.b)


def make_app(
    model: Model, recorder: LossRecorder, model_name: str, version: str
) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(recorder.registry or REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(size) or b"{}")
            if (method, path) == ("POST", "/predict"):
                x = np.asarray(body["features"], dtype=float)
                logit = model.predict_logit(x)
                pid = body.get("id") or uuid.uuid4().hex
                # The one line a model server adds at prediction time (logits are fine too):
                recorder.record_prediction(pid, logits=logit, model=model_name, version=version)
                p1 = 1.0 / (1.0 + np.exp(-logit))
                return _json(start_response, 200, {"id": pid, "probabilities": [1.0 - p1, p1]})
            if (method, path) == ("POST", "/label"):
                # ... and the one line when the ground truth arrives:
                loss = recorder.record_label(body["id"], int(body["label"]))
                return _json(start_response, 200, {"loss": loss})
            return _json(start_response, 404, {"error": f"no route {method} {path}"})
        except (KeyError, ValueError, TypeError) as err:
            return _json(start_response, 400, {"error": str(err)})

    return app


def _json(start_response: Callable[..., Any], status: int, doc: Any) -> list[bytes]:
    data = json.dumps(doc).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    start_response(
        f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fraud-scorer", help="value of the `model` label")
    ap.add_argument("--version", default="v42", help="value of the `version` label")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--skew", type=float, default=0.0, help="perturb the weights: a worse model")
    ap.add_argument("--capacity", type=int, default=100_000, help="max predictions waiting for a label")
    ap.add_argument("--ttl", type=float, default=3600.0, help="seconds a prediction waits for its label")
    args = ap.parse_args(argv)
    registry = CollectorRegistry()  # or the default prometheus_client.REGISTRY, next to your own metrics
    recorder = LossRecorder(registry, capacity=args.capacity, ttl_s=args.ttl)
    app = make_app(Model(args.skew), recorder, args.model, args.version)
    httpd = make_server(args.addr, args.port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {args.model} {args.version} on http://{args.addr}:{httpd.server_port}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
