"""A real HTTP receiver for notification tests: ThreadingHTTPServer on 127.0.0.1, a free port.

It records every POST (path, headers, JSON body), can answer 503 to the next N requests, and can
hang: a request then waits, unanswered, until the test releases it (or the client times out).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased (HTTP header names are case-insensitive)
    body: Any


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests
    hang: threading.Event | None = None  # when set: requests wait until it is set
    hung: int = 0  # requests that arrived and are waiting
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """Poll until `count` requests were answered; fails past `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"{self.url}: {len(self.requests)} requests, expected {count}")

    def wait_hung(self, count: int, within: float = 10.0) -> None:
        """Poll until `count` requests are waiting on `hang`."""
        deadline = time.monotonic() + within
        while self.hung < count:
            assert time.monotonic() < deadline, f"{self.url}: {self.hung} requests hung, expected {count}"
            time.sleep(0.01)


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if rx.hang is not None:
                with rx.lock:
                    rx.hung += 1
                rx.hang.wait(30)
            with rx.lock:
                status = 503 if rx.fail_next > 0 else 200
                rx.fail_next = max(0, rx.fail_next - 1)
                rx.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
                )
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return Handler


@contextmanager
def receiver() -> Iterator[Receiver]:
    rx = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
    server.daemon_threads = True
    rx.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        if rx.hang is not None:
            rx.hang.set()  # let hung handlers end
        server.shutdown()
        server.server_close()
        thread.join(5)
