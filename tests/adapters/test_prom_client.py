"""Connection options against real servers: basic auth and TLS on a real Prometheus (--web.config.file),
a bearer token through an auth proxy in front of it, timeouts, 5xx retries, and a wrong path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

from lossgate.adapters.prometheus import PromClient, PrometheusConfig
from lossgate.ports import MetricsErrorKind
from lossgate_dev.devenv.certs import make_pki
from lossgate_dev.devenv.procs import Server, free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus, _binary

pytestmark = pytest.mark.prom
USER, PASSWORD = "lossgate", "lossgate-test-pw"
# bcrypt (cost 4) of PASSWORD, as Prometheus' web config requires hashed passwords.
PASSWORD_HASH = "$2b$04$lYPYvvsvk3IpP90h1wvi9OW8ZY6aiW0LteWii/bjk6p4rL4PVI3X."
TOKEN = "s3cret-token"


class SecuredPrometheus(Prometheus):
    """The same real Prometheus, started with a web config: TLS and basic auth required."""

    ca: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _launch(self) -> None:
        pki = make_pki(self.workdir / "pki")
        self.ca = pki.ca_cert
        web = self.workdir / "web.yml"
        web.write_text(
            f"tls_server_config:\n  cert_file: {pki.serving_cert}\n  key_file: {pki.serving_key}\n"
            f"basic_auth_users:\n  {USER}: {PASSWORD_HASH}\n"
        )
        self.server = Server("prometheus", [
            _binary("prometheus"), f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.config.file={web}", "--log.level=warn",
        ], self.workdir / "prometheus.log")  # fmt: skip
        client = PromClient(PrometheusConfig(self.url, basic_auth=(USER, PASSWORD), ca_bundle=str(self.ca)))
        wait_until(lambda: bool(client.instant("vector(1)", 0)), 60, "TLS Prometheus ready", self.server)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredPrometheus]:
    prom = SecuredPrometheus.start(tmp_path / "prom")
    assert isinstance(prom, SecuredPrometheus)
    yield prom
    prom.stop()


def _problem(client: PromClient, query: str = "vector(1)") -> Any:
    from lossgate.adapters.prometheus.client import QueryFailed

    with pytest.raises(QueryFailed) as failed:
        client.instant(query, 1e9)
    return failed.value.problem


def test_basic_auth_and_tls_with_ca_bundle(secured: SecuredPrometheus) -> None:
    # Given a Prometheus that requires TLS and basic auth, When the adapter has the CA and the password
    client = PromClient(PrometheusConfig(secured.url, basic_auth=(USER, PASSWORD), ca_bundle=str(secured.ca)))
    # Then queries succeed
    (sample,) = client.instant("vector(42)", 1e9)
    assert sample["value"][1] == "42"


def test_wrong_password_is_unavailable_unauthorized_without_retries(secured: SecuredPrometheus) -> None:
    bad = "not-the-password-9f3"
    config = PrometheusConfig(secured.url, basic_auth=(USER, bad), ca_bundle=str(secured.ca), retries=3)
    client = PromClient(config, sleep=lambda _: None)
    problem = _problem(client)
    assert problem.kind == MetricsErrorKind.UNAVAILABLE
    assert problem.details["reason"] == "Unauthorized"
    assert problem.details["status"] == "401"
    assert "credentials" in problem.message
    assert client.requests_sent == 1  # a wrong secret does not get better by retrying
    assert bad not in repr(config)
    assert bad not in problem.message


def test_unknown_ca_is_a_tls_problem_and_skip_verify_connects(secured: SecuredPrometheus) -> None:
    # Given no CA bundle for a certificate signed by a private CA
    client = PromClient(PrometheusConfig(secured.url, basic_auth=(USER, PASSWORD), retries=2))
    problem = _problem(client)
    assert problem.kind == "Unavailable"
    assert problem.details["reason"] == "TLS"
    assert "CA bundle" in problem.message
    assert client.requests_sent == 1
    # When verification is skipped, Then it connects
    insecure = PromClient(
        PrometheusConfig(secured.url, basic_auth=(USER, PASSWORD), insecure_skip_verify=True)
    )
    with pytest.warns(
        InsecureRequestWarning
    ):  # urllib3's InsecureRequestWarning: skip-verify is for testing only
        assert insecure.instant("vector(1)", 1e9)[0]["value"][1] == "1"


class _Proxy:
    """A loopback HTTP front for a real Prometheus: checks a bearer token (like kube-rbac-proxy or
    oauth2-proxy), can answer 503 for the first `fail` requests, or hang to force a timeout."""

    def __init__(self, upstream: str, fail: int = 0, hang: bool = False) -> None:
        self.upstream, self.fail, self.hang = upstream, fail, hang
        self.seen: list[str | None] = []
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.seen.append(self.headers.get("Authorization"))
                if proxy.hang:
                    proxy.release.wait(10)
                    return
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"status": "error", "error": "invalid bearer token"})
                if proxy.fail > 0:
                    proxy.fail -= 1
                    return self._send(
                        503, {"status": "error", "errorType": "unavailable", "error": "warming up"}
                    )
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as err:
                    status, body = err.code, err.read()
                self._send(status, body)

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def _proxy(upstream: str, **kw: Any) -> Iterator[_Proxy]:
    p = _Proxy(upstream, **kw)
    try:
        yield p
    finally:
        p.close()


def test_bearer_token_reaches_prometheus_through_an_auth_proxy(prometheus: Prometheus) -> None:
    with _proxy(prometheus.url) as proxy:
        # Given the right token, Then the real Prometheus answers through the proxy
        ok = PromClient(PrometheusConfig(proxy.url, bearer_token=TOKEN))
        assert ok.instant("vector(7)", 1e9)[0]["value"][1] == "7"
        assert proxy.seen[-1] == f"Bearer {TOKEN}"
        # And a wrong token is Unauthorized, not retried, and not in the config's repr
        bad = PromClient(PrometheusConfig(proxy.url, bearer_token="nope", retries=2))
        problem = _problem(bad)
        assert problem.details["reason"] == "Unauthorized"
        assert "invalid bearer token" in problem.message
        assert bad.requests_sent == 1
        assert "nope" not in repr(bad.config)


def test_5xx_is_retried_with_backoff_then_succeeds(prometheus: Prometheus) -> None:
    with _proxy(prometheus.url, fail=2) as proxy:
        delays: list[float] = []
        client = PromClient(PrometheusConfig(proxy.url, bearer_token=TOKEN, retries=2), sleep=delays.append)
        # When the first two answers are 503, Then the third attempt returns the data
        assert client.instant("vector(3)", 1e9)[0]["value"][1] == "3"
        assert client.requests_sent == 3
        assert len(delays) == 2
        assert delays[1] > delays[0] * 0.9


def test_persistent_5xx_is_unavailable_after_the_retry_budget(prometheus: Prometheus) -> None:
    with _proxy(prometheus.url, fail=100) as proxy:
        client = PromClient(PrometheusConfig(proxy.url, bearer_token=TOKEN, retries=2), sleep=lambda _: None)
        problem = _problem(client)
        assert problem.kind == "Unavailable"
        assert problem.details["reason"] == "HTTP503"
        assert problem.details["attempts"] == "3"
        assert "warming up" in problem.message


def test_timeout_is_unavailable_and_retried(prometheus: Prometheus) -> None:
    with _proxy(prometheus.url, hang=True) as proxy:
        client = PromClient(PrometheusConfig(proxy.url, timeout_s=0.3, retries=1), sleep=lambda _: None)
        problem = _problem(client)
        assert problem.kind == "Unavailable"
        assert problem.details["reason"] == "Timeout"
        assert problem.details["attempts"] == "2"
        assert "0.3s" in problem.message


def test_wrong_path_prefix_is_unavailable_with_a_hint(prometheus: Prometheus) -> None:
    client = PromClient(PrometheusConfig(prometheus.url + "/prometheus", retries=2))
    problem = _problem(client)
    assert problem.kind == "Unavailable"
    assert problem.details["status"] == "404"
    assert "path prefix" in problem.message
    assert client.requests_sent == 1


def test_concurrent_reads_from_an_event_loop_via_to_thread(prometheus: Prometheus) -> None:
    # Given one adapter shared by many rollouts, When 12 reads run at once off the event loop
    client = PromClient(PrometheusConfig(prometheus.url))

    async def main() -> list[list[dict[str, Any]]]:
        reads = (asyncio.to_thread(client.instant, f"vector({i})", 1e9) for i in range(12))
        return await asyncio.gather(*reads)

    results = asyncio.run(main())
    # Then each gets its own answer (one HTTP session per worker thread), and close() closes them all
    assert [r[0]["value"][1] for r in results] == [str(i) for i in range(12)]
    assert client.requests_sent == 12
    client.close()
    assert client.instant("vector(5)", 1e9)[0]["value"][1] == "5"  # reopens after close
