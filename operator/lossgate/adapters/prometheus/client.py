"""Connection to Prometheus: auth, TLS, timeouts, bounded retries, and error classification.

Built on prometheus-api-client (requests). Blocking: callers on an event loop run it with
asyncio.to_thread. Failures come back as `Problem` values, never as exceptions:

    connection refused, timeout, TLS, 5xx, 429, 401/403  -> Unavailable (5xx/429/timeouts retried)
    400 / 422 (bad PromQL, execution error)              -> BadQuery, with Prometheus' own message
"""

from __future__ import annotations

import ast
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from lossgate.core.evidence import Problem
from lossgate.ports import MetricsErrorKind

_STATUS = re.compile(r"HTTP Status Code (\d{3}) \((.*)\)\s*$", re.DOTALL)
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PrometheusConfig:
    """Where and how to reach Prometheus; secrets are already resolved by the caller (not repr'd)."""

    address: str
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)  # (user, password)
    ca_bundle: str | None = None  # path to a PEM bundle that signs the server's certificate
    insecure_skip_verify: bool = False
    timeout_s: float = 10.0  # per HTTP request; also sent as the query's server-side timeout
    retries: int = 2  # extra attempts after the first, only for Unavailable (not auth/TLS) errors
    backoff_s: float = 0.5  # first retry delay; doubles each retry (with jitter), capped below
    backoff_max_s: float = 5.0
    lookback_s: float = 300.0  # how far before the window to look for each counter's starting value
    namespace_label: str | None = None  # when set, default selectors also match <label>="<namespace>"

    def invalid(self) -> str | None:
        """What is wrong with this configuration (reported as a BadQuery problem, never raised)."""
        if not self.address.startswith(("http://", "https://")):
            return f"the Prometheus address must start with http:// or https://, got {self.address!r}"
        if self.bearer_token and self.basic_auth:
            return "give either a bearer token or basic auth for Prometheus, not both"
        if self.timeout_s <= 0 or self.retries < 0 or self.lookback_s < 0:
            return f"timeout must be > 0 and retries >= 0 (got {self.timeout_s}s, {self.retries})"
        return None


class QueryFailed(Exception):
    """Internal: carries the classified Problem out of deep call stacks."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class PromClient:
    """Instant and range queries with retries; raises QueryFailed(problem) on a classified failure."""

    def __init__(self, config: PrometheusConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.address = config.address.rstrip("/")
        self._sleep = sleep
        self._local = threading.local()  # one requests.Session per thread (Sessions are not thread-safe)
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        self.requests_sent = 0

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            c = self.config
            session = requests.Session()
            session.verify = False if c.insecure_skip_verify else (c.ca_bundle or True)
            headers = {"Authorization": f"Bearer {c.bearer_token}"} if c.bearer_token else None
            api = PrometheusConnect(
                url=self.address, headers=headers, auth=c.basic_auth, session=session,
                retry=Retry(total=0, read=False, raise_on_status=False),  # ours: classified, bounded
            )  # fmt: skip
            self._local.api = api
            with self._all_lock:
                self._all.append(api)
        return api

    def close(self) -> None:
        """Close every thread's session (a later query opens a new one)."""
        with self._all_lock:
            apis, self._all = self._all, []
        for api in apis:
            api.close()
        self._local = threading.local()

    def instant(self, query: str, at_s: float) -> list[dict[str, Any]]:
        params = {"time": f"{at_s:.3f}", "timeout": f"{round(self.config.timeout_s * 1000)}ms"}
        return self._call(
            query, lambda api: api.custom_query(query, params=params, timeout=self.config.timeout_s)
        )

    def range(self, query: str, start_s: float, end_s: float, step_s: float) -> list[dict[str, Any]]:
        # start/end in params override the library's rounding to whole seconds
        params = {
            "start": f"{start_s:.3f}",
            "end": f"{end_s:.3f}",
            "timeout": f"{round(self.config.timeout_s * 1000)}ms",
        }
        return self._call(
            query,
            lambda api: api.custom_query_range(
                query, start_time=_dt(start_s), end_time=_dt(end_s), step=f"{step_s:.3f}", params=params,
                timeout=self.config.timeout_s,
            ),
        )  # fmt: skip

    def _call(self, query: str, do: Callable[[Any], Any]) -> list[dict[str, Any]]:
        invalid = self.config.invalid()
        if invalid:
            details = {"address": self.address, "reason": "InvalidConfig"}
            raise QueryFailed(Problem(MetricsErrorKind.BAD_QUERY.value, invalid, details))
        attempts = 1 + max(self.config.retries, 0)
        for attempt in range(attempts):
            self.requests_sent += 1
            try:
                result = do(self._api())
                if not isinstance(result, list):
                    raise ValueError(f"unexpected result type {type(result).__name__}")
                return result
            except Exception as err:
                problem, retryable = self.classify(err, query)
            if not retryable or attempt == attempts - 1:
                if attempt:
                    problem.details["attempts"] = str(attempt + 1)
                raise QueryFailed(problem)
            delay = min(self.config.backoff_max_s, self.config.backoff_s * 2**attempt)
            self._sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (retry jitter, not a secret)
        raise AssertionError("unreachable")

    def classify(self, err: Exception, query: str) -> tuple[Problem, bool]:
        """(Problem, whether a retry may help)."""
        where = f"Prometheus at {self.address}"
        details = {"address": self.address, "query": query}
        unavailable = MetricsErrorKind.UNAVAILABLE.value
        if isinstance(err, requests.exceptions.SSLError):
            msg = (f"TLS handshake with {where} failed ({_short(err)}); set the CA bundle that signs its "
                   "certificate, or insecureSkipVerify for testing only")  # fmt: skip
            return Problem(unavailable, msg, details | {"reason": "TLS"}), False
        if isinstance(err, urllib3.exceptions.NewConnectionError):  # raw urllib3 errors, if any slip through
            err = requests.exceptions.ConnectionError(err)
        elif isinstance(err, urllib3.exceptions.TimeoutError):
            err = requests.exceptions.Timeout(err)
        if isinstance(err, requests.exceptions.Timeout):
            msg = f"{where} did not answer within {self.config.timeout_s}s; query: {query}"
            return Problem(unavailable, msg, details | {"reason": "Timeout"}), True
        if isinstance(err, requests.exceptions.ConnectionError):
            msg = (
                f"cannot connect to {where} ({_short(err)}); check the address and that Prometheus is running"
            )
            return Problem(unavailable, msg, details | {"reason": "ConnectionError"}), True
        if isinstance(err, PrometheusApiClientException):
            return self._classify_status(str(err), query, details)
        msg = (
            f"unexpected answer from {where} ({type(err).__name__}: {_short(err)}); is this a Prometheus API?"
        )
        return Problem(unavailable, msg, details | {"reason": "BadResponse"}), False

    def _classify_status(self, text: str, query: str, details: dict[str, str]) -> tuple[Problem, bool]:
        m = _STATUS.match(text)
        status = int(m.group(1)) if m else 0
        error = _prometheus_error(m.group(2)) if m else text
        details = details | {"status": str(status), "error": error}
        where = f"Prometheus at {self.address}"
        if status in (400, 422):
            msg = (
                f"{where} rejected the query: {error}; query: {query}. Fix the PromQL template or metric name"
            )
            return Problem(MetricsErrorKind.BAD_QUERY.value, msg, details | {"reason": "BadQuery"}), False
        if status in (401, 403):
            msg = (f"{where} refused the credentials (HTTP {status}: {error}); check the bearer token or "
                   "basic-auth Secret the rollout references")  # fmt: skip
            return Problem(
                MetricsErrorKind.UNAVAILABLE.value, msg, details | {"reason": "Unauthorized"}
            ), False
        retry = status in _RETRY_STATUS or status >= 500
        msg = f"{where} answered HTTP {status} ({error}); query: {query}"
        if status == 404:
            msg += "; check the address (path prefix?)"
        return Problem(MetricsErrorKind.UNAVAILABLE.value, msg, details | {"reason": f"HTTP{status}"}), retry


def _prometheus_error(body_repr: str) -> str:
    """Prometheus' `error` field from the library's repr(response.content), else the raw text."""
    try:
        body = ast.literal_eval(body_repr)
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    except (ValueError, SyntaxError):
        return body_repr[:500]
    try:
        doc = json.loads(text)
        return str(doc.get("error") or text)[:1000]
    except (ValueError, AttributeError):
        return text.strip()[:500]


def _short(err: Exception) -> str:
    """The root cause of a requests/urllib3 error ("[Errno 111] Connection refused"), not its whole chain."""
    text = str(err)
    cause = _ERRNO.search(text)
    if cause:
        return cause.group(0).rstrip()
    return text if len(text) <= 300 else text[:300] + "..."


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
