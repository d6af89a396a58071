"""The scale benchmark's synthetic model-serving exporter: ONE HTTP process that serves /metrics for
M models x 2 versions x P pods, as lossgate.instrument.LossRecorder would (docs/metrics.md).

    python bench/_scale_exporter.py --port 9100 --models 100 --pods 2 --rate 20

Every second a background thread draws the labelled predictions of that second for every series
(Poisson counts; per-request cross-entropy drawn exactly, exponential with the arm's mean, clipped
at -ln(1e-6)) and adds them to the counters: `<metric>_count`, `_sum`, `_squared_sum`, `_bucket{le}`
(the LossRecorder's buckets, 4.6 among them), `_created` and `model_predictions_total`, labelled
model, version and pod. Both versions have the same loss distribution, except the first
`--regress-fraction` of the models, whose canary (v2) is worse by `--regress-delta` nats.

Listens on 127.0.0.1 only. Stops on SIGTERM/SIGINT. Standard library + numpy.
"""

from __future__ import annotations

import argparse
import math
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MAX_LOSS = -math.log(1e-6)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.693, 1.0, 1.5, 2.0, 3.0,
           4.6, 7.0, 10.0, 14.0)  # fmt: skip


def model_name(i: int) -> str:
    return f"m{i:05d}"


class Counters:
    """All series' state as numpy arrays; `advance` adds the predictions of `dt` seconds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.metric: str = args.metric
        self.rng = np.random.default_rng(args.seed)
        self.lock = threading.Lock()
        rows = [(m, v, p) for m in range(args.models) for v in ("v1", "v2") for p in range(args.pods)]
        self.n = len(rows)
        n_regress = round(args.regress_fraction * args.models)
        self.mean = np.array(
            [
                args.mean_loss + (args.regress_delta if v == "v2" and m < n_regress else 0.0)
                for m, v, _ in rows
            ]
        )
        share = np.array([args.canary_share if v == "v2" else 1.0 - args.canary_share for _, v, _ in rows])
        self.rate = args.rate * share / args.pods  # labelled predictions per second per series
        self.bounds = np.array(BUCKETS)
        self.count = np.zeros(self.n, dtype=np.int64)
        self.sum = np.zeros(self.n)
        self.sumsq = np.zeros(self.n)
        self.buckets = np.zeros((self.n, len(BUCKETS) + 1), dtype=np.int64)  # non-cumulative, +Inf last
        self.created = time.time()
        labels = [f'model="{model_name(m)}",pod="p{p}",version="{v}"' for m, v, p in rows]
        self.prefix_count = [f"{self.metric}_count{{{lb}}} " for lb in labels]
        self.prefix_sum = [f"{self.metric}_sum{{{lb}}} " for lb in labels]
        self.prefix_sumsq = [f"{self.metric}_squared_sum{{{lb}}} " for lb in labels]
        self.prefix_created = [f"{self.metric}_created{{{lb}}} " for lb in labels]
        self.prefix_pred = [f"model_predictions_total{{{lb}}} " for lb in labels]
        les = [*(format(b, "g") for b in BUCKETS), "+Inf"]
        self.prefix_bucket = [[f'{self.metric}_bucket{{{lb},le="{le}"}} ' for le in les] for lb in labels]

    def advance(self, dt: float) -> None:
        n = self.rng.poisson(self.rate * dt)
        total = int(n.sum())
        if total == 0:
            return
        idx = np.repeat(np.arange(self.n), n)
        loss = np.minimum(self.rng.exponential(self.mean[idx]), MAX_LOSS)
        s = np.bincount(idx, weights=loss, minlength=self.n)
        q = np.bincount(idx, weights=loss * loss, minlength=self.n)
        b = np.searchsorted(self.bounds, loss, side="left")  # loss <= le counts in bucket le
        nb = len(BUCKETS) + 1
        hist = np.bincount(idx * nb + b, minlength=self.n * nb).reshape(self.n, nb)
        with self.lock:  # one scrape never mixes requests: n, sum, sumsq and buckets move together
            self.count += n
            self.sum += s
            self.sumsq += q
            self.buckets += hist

    def render(self) -> bytes:
        with self.lock:
            count = self.count.tolist()
            sums = self.sum.tolist()
            sumsq = self.sumsq.tolist()
            cum = np.cumsum(self.buckets, axis=1).tolist()
        m = self.metric
        out = [
            f"# HELP {m} Per-request cross-entropy (nats), observed when the label arrives.",
            f"# TYPE {m} histogram",
        ]
        created = repr(self.created)
        for i in range(self.n):
            out.extend(pb + str(c) for pb, c in zip(self.prefix_bucket[i], cum[i], strict=True))
            out.append(self.prefix_count[i] + str(count[i]))
            out.append(self.prefix_sum[i] + repr(sums[i]))
            out.append(self.prefix_created[i] + created)
        out.append(f"# HELP {m}_squared_sum Sum of squared per-request cross-entropy (nats^2).")
        out.append(f"# TYPE {m}_squared_sum counter")
        out.extend(p + repr(v) for p, v in zip(self.prefix_sumsq, sumsq, strict=True))
        out.append("# HELP model_predictions_total Predictions served.")
        out.append("# TYPE model_predictions_total counter")
        out.extend(p + str(c) for p, c in zip(self.prefix_pred, count, strict=True))
        return ("\n".join(out) + "\n").encode()


def serve(args: argparse.Namespace) -> None:
    counters = Counters(args)
    stop = threading.Event()

    def ticker() -> None:
        last = time.monotonic()
        while not stop.wait(1.0):
            now = time.monotonic()
            counters.advance(now - last)
            last = now

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body = counters.render()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            elif self.path.startswith("/healthz"):
                body, ctype = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def shutdown(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threading.Thread(target=ticker, daemon=True).start()
    print(f"serving {counters.n} series sets on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.5)
    server.server_close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--models", type=int, required=True)
    p.add_argument("--pods", type=int, default=2, help="pods per version")
    p.add_argument("--rate", type=float, default=20.0, help="labelled predictions/s per model (both arms)")
    p.add_argument("--canary-share", type=float, default=0.1, help="fraction of a model's traffic on v2")
    p.add_argument("--mean-loss", type=float, default=0.3, help="mean per-request cross-entropy (nats)")
    p.add_argument("--regress-fraction", type=float, default=0.0, help="models whose canary is worse")
    p.add_argument("--regress-delta", type=float, default=0.1, help="how much worse (nats)")
    p.add_argument("--metric", default="model_prediction_loss", help="loss histogram base name")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    serve(parse())
