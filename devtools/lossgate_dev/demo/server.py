"""A demo model server: one model version behind HTTP, exporting real per-request cross-entropy.

    POST /predict  {"id": "...", "features": [64 floats], "class"?: "7"}
                   -> {"probabilities": [...], "version": "..."}   (class: a slice label for the loss)
    POST /labels   [{"id": "...", "label": 3}, ...]       -> {"accepted": n}   (labels arrive later)
    GET  /metrics  Prometheus exposition (lossgate.instrument serving metrics, and per request
                   http_requests_total{model,version,code} and http_request_duration_seconds)

With --joiner URL the server keeps nothing: it logs each prediction to that `lossgate joiner`
(docs/joiner.md) and labels go to the joiner too; its /metrics is then empty.

Run: python -m lossgate_dev.demo.server --model digits --version v1 --variant baseline --port 8001
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lossgate.instrument.requests import RequestMetrics
from lossgate.instrument.serving import LossRecorder
from lossgate.joiner import JoinerClient, JoinerError
from lossgate_dev.demo.models import DELAY_S, VARIANTS, train


class ModelServer:
    def __init__(self, model: str, version: str, variant: str, joiner: str | None = None) -> None:
        self.model_name, self.version = model, version
        self.clf = train(variant)
        self.registry = CollectorRegistry()
        # Either the joiner holds the pending predictions, or this process does.
        self.joiner = JoinerClient(joiner) if joiner else None
        self.recorder = None if joiner else LossRecorder(registry=self.registry, capacity=100_000, ttl_s=600)
        self.requests = RequestMetrics(self.registry)  # request counts and latency, joiner or not
        self.delay_s = DELAY_S.get(variant, 0.0)

    def predict(self, pid: str, features: list[float], klass: str | None = None) -> list[float]:
        if self.delay_s:
            time.sleep(self.delay_s)  # the slow variant's extra latency (the demo's `slow` scenario)
        probs = self.clf.predict_proba(np.asarray(features, dtype=np.float64).reshape(1, -1))[0]
        out = [float(p) for p in probs]
        if self.joiner is not None:
            # Logged before the answer goes out, so a label can never reach the joiner first.
            extra = {} if klass is None else {"class": klass}
            self.joiner.prediction(
                pid, model=self.model_name, version=self.version, probabilities=out, served_at=time.time(),
                **extra,
            )  # fmt: skip
        elif self.recorder is not None:
            self.recorder.record_prediction(
                pid, probabilities=probs, model=self.model_name, version=self.version, klass=klass
            )
        return out

    def serve(self, pid: str, features: list[float], klass: str | None = None) -> list[float]:
        """predict(), counted and timed for the guardrails (a failed joiner call counts as a 503)."""
        with self.requests.timed(model=self.model_name, version=self.version) as call:
            try:
                return self.predict(pid, features, klass)
            except (JoinerError, OSError):
                call.code = "503"
                raise

    def label(self, pid: str, label: int) -> None:
        if self.joiner is not None:
            self.joiner.label(pid, int(label))
        elif self.recorder is not None:
            self.recorder.record_label(pid, int(label))


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the driver reuses one connection
        disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
            pass

        def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._reply(200, b'{"ok": true}')
            else:
                self._reply(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            try:
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                if self.path == "/predict":
                    klass = None if doc.get("class") is None else str(doc["class"])
                    probs = server.serve(str(doc["id"]), doc["features"], klass)
                    self._reply(200, json.dumps({"probabilities": probs, "version": server.version}).encode())
                elif self.path == "/labels":
                    for item in doc:
                        server.label(str(item["id"]), int(item["label"]))
                    self._reply(200, json.dumps({"accepted": len(doc)}).encode())
                else:
                    self._reply(404, b'{"error": "not found"}')
            except (KeyError, TypeError, ValueError) as err:
                self._reply(400, json.dumps({"error": f"bad request: {err}"}).encode())
            except (JoinerError, OSError) as err:  # the joiner is down or refused: not the caller's fault
                self._reply(503, json.dumps({"error": f"label joiner: {err}"}).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--version", required=True)
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--joiner", default=None, help="log predictions to this lossgate joiner URL")
    args = p.parse_args(argv)
    model = ModelServer(args.model, args.version, args.variant, args.joiner)
    httpd = ThreadingHTTPServer((args.host, args.port), _handler(model))
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(
        f"serving {args.model}:{args.version} ({args.variant}) on http://{args.host}:{args.port}", flush=True
    )
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
