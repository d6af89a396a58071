"""JoinerClient: send predictions and labels to a `lossgate joiner` (stdlib only, no dependencies).

    client = JoinerClient("http://lossgate-joiner:8095")
    client.predictions([{"id": rid, "model": "fraud-scorer", "version": "v42", "probabilities": p}])
    client.labels([{"id": rid, "label": 1}])       # minutes to days later; retries are harmless

Both calls are idempotent (a retried batch changes nothing), so they retry on 429/503 and connection
errors, honouring Retry-After, up to `retries` times; a 400 raises JoinerError naming the field.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any


class JoinerError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"joiner answered {status}: {body.get('error', body)}")
        self.status = status
        self.field = body.get("field")
        self.body = body


class JoinerClient:
    def __init__(
        self, url: str, *, timeout_s: float = 10.0, retries: int = 3, max_wait_s: float = 30.0
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http(s)://..., got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_wait_s = max_wait_s

    def predictions(self, items: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Each item: id, model, version, probabilities or logits; optional class and served_at."""
        return self._post("/v1/predictions", {"predictions": list(items)})

    def prediction(self, id: str, *, model: str, version: str, **scores: Any) -> dict[str, int]:
        return self.predictions([{"id": id, "model": model, "version": version, **scores}])

    def labels(self, items: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Each item: id (the prediction's) and label (the true class index)."""
        return self._post("/v1/labels", {"labels": list(items)})

    def label(self, id: str, label: int) -> dict[str, int]:
        return self.labels([{"id": id, "label": label}])

    def token_label(self, id: str, token_nll: float, tokens: int) -> dict[str, int]:
        """A language model's label: the reference continuation's summed token NLL and its tokens
        (lossgate.instrument.lm.continuation_nll), for a prediction sent with "token_loss": true."""
        return self.labels([{"id": id, "token_nll": token_nll, "tokens": tokens}])

    def _post(self, path: str, doc: dict[str, Any]) -> dict[str, int]:
        data = json.dumps(doc, allow_nan=False).encode()
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(  # noqa: S310 - the URL's scheme is checked in __init__
                self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            wait = min(self.max_wait_s, 0.5 * 2**attempt)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310
                    out: dict[str, int] = json.loads(r.read())
                    return out
            except urllib.error.HTTPError as e:
                body = _body(e)
                if e.code not in (429, 503) or attempt == self.retries:
                    raise JoinerError(e.code, body) from None
                wait = min(self.max_wait_s, float(e.headers.get("Retry-After") or wait))
            except (urllib.error.URLError, OSError, http.client.HTTPException):
                if attempt == self.retries:
                    raise
            time.sleep(wait)
        raise AssertionError("unreachable")


def _body(e: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        doc = json.loads(e.read())
    except (ValueError, OSError):
        return {"error": e.reason}
    return doc if isinstance(doc, dict) else {"error": doc}
