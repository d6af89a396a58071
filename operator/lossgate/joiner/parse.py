"""JSON batches in, Predictions and Labels out; every refusal names the field (nothing is stored
from a batch with one bad item)."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np

from lossgate.instrument.losses import log_probs, log_probs_rows
from lossgate.instrument.tokens import check_token_label
from lossgate.joiner.records import FieldError, Label, Prediction, SeriesKey

MAX_BATCH = 10_000
MAX_ID = 256  # characters of a prediction id
MAX_NAME = 128  # characters of a model, version or class
MAX_CLASSES = 4096
MAX_FUTURE_S = 300.0  # serving times this far ahead of the joiner's clock are refused (clock skew)
_CONTROL = re.compile(r"[\x00-\x1f]")


def loads(body: bytes, what: str = "body") -> Any:
    """json.loads that refuses NaN/Infinity literals, bad UTF-8 and absurd nesting, naming `what`."""

    def _constant(name: str) -> Any:
        raise FieldError(what, f"{name} is not valid JSON")

    try:
        return json.loads(body, parse_constant=_constant)
    except FieldError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FieldError(what, f"not valid JSON ({e})") from None
    except RecursionError:
        raise FieldError(what, "JSON nested too deeply") from None


def batch(doc: Any, name: str) -> list[Any]:
    if not isinstance(doc, dict) or name not in doc:
        raise FieldError(name, f'missing: send {{"{name}": [...]}}')
    items = doc[name]
    if not isinstance(items, list):
        raise FieldError(name, f"must be a list, got {type(items).__name__}")
    if len(items) > MAX_BATCH:
        raise FieldError(name, f"at most {MAX_BATCH} items per request, got {len(items)}")
    return items


def text(value: Any, field: str, limit: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(field, f"must be a string, got {type(value).__name__}")
    s = str(value)
    if not 0 < len(s) <= limit:
        raise FieldError(field, f"must be 1 to {limit} characters, got {len(s)}")
    if _CONTROL.search(s):
        raise FieldError(field, "must not contain control characters")
    return s


def timestamp(value: Any, field: str, now: float) -> float:
    """Unix seconds, or an RFC 3339 string with a zone; not more than MAX_FUTURE_S ahead of `now`."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(field, f"not an RFC 3339 time: {value[:40]!r}") from None
        if dt.tzinfo is None:
            raise FieldError(field, "an RFC 3339 time needs a zone (Z or +hh:mm)")
        t = dt.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
    else:
        raise FieldError(field, f"must be Unix seconds or an RFC 3339 string, got {type(value).__name__}")
    if not math.isfinite(t) or t <= 0:
        raise FieldError(field, f"must be a positive finite time, got {value!r}")
    if t > now + MAX_FUTURE_S:
        raise FieldError(
            field, f"is {t - now:.0f} s ahead of the joiner's clock (more than {MAX_FUTURE_S:.0f} s)"
        )
    return t


def _raw_scores(item: dict[str, Any], field: str) -> tuple[str, str, Any]:
    """(kind, field of the scores, the scores) after type checks; the numbers are checked later.
    A language model's prediction ("token_loss": true) has no scores: its label brings its loss."""
    if item.get("token_loss") is True:
        if "probabilities" in item or "logits" in item:
            raise FieldError(field, "a token_loss prediction has no probabilities or logits")
        return "token_loss", field, []
    keys = [k for k in ("probabilities", "logits") if k in item]
    if len(keys) != 1:
        raise FieldError(field, "give exactly one of probabilities or logits")
    values = item[keys[0]]
    where = f"{field}.{keys[0]}"
    if isinstance(values, list):
        if not 0 < len(values) <= MAX_CLASSES:
            raise FieldError(where, f"must hold 1 to {MAX_CLASSES} numbers, got {len(values)}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise FieldError(where, "must be numbers")
    elif isinstance(values, bool) or not isinstance(values, int | float):
        raise FieldError(where, f"must be a number or a list of numbers, got {type(values).__name__}")
    return keys[0], where, values


def scores(item: dict[str, Any], field: str) -> bytes:
    """One item's probabilities or logits as float64 log-probability bytes."""
    return score_rows([_raw_scores(item, field)])[0]


def score_rows(raw: list[tuple[str, str, Any]]) -> list[bytes]:
    """Log-probability bytes of many (kind, field, scores), grouped by kind and width so that
    lossgate.instrument computes each group at once (bit for bit what log_probs gives one by one)."""
    groups: defaultdict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (kind, _, values) in enumerate(raw):
        groups[(kind, len(values) if isinstance(values, list) else 0)].append(i)
    out: list[bytes] = [b""] * len(raw)
    for (kind, _width), idx in groups.items():
        if kind == "token_loss":
            continue  # no scores: b""
        try:
            rows = log_probs_rows(
                np.array([raw[i][2] for i in idx], dtype=np.float64), logits=kind == "logits"
            )
        except ValueError:
            for i in idx:  # find and name the offending item
                try:
                    log_probs(**{kind: raw[i][2]})
                except ValueError as e:
                    raise FieldError(raw[i][1], str(e)) from None
            raise
        for i, row in zip(idx, rows, strict=True):
            out[i] = row.tobytes()
    return out


def key(item: dict[str, Any], field: str) -> SeriesKey:
    model = text(item.get("model"), f"{field}.model", MAX_NAME)
    version = text(item.get("version"), f"{field}.version", MAX_NAME)
    klass = item.get("class")
    return (model, version, None if klass is None else text(klass, f"{field}.class", MAX_NAME))


def predictions(doc: Any, now: float) -> list[Prediction]:
    items = batch(doc, "predictions")
    heads: list[tuple[str, SeriesKey, float]] = []
    raw: list[tuple[str, str, Any]] = []
    keys: dict[tuple[Any, Any, Any], SeriesKey] = {}  # model/version/class repeat: validate each once
    for i, item in enumerate(items):
        field = f"predictions[{i}]"
        if not isinstance(item, dict):
            raise FieldError(field, f"must be an object, got {type(item).__name__}")
        raw_key = (item.get("model"), item.get("version"), item.get("class"))
        try:
            k = keys.get(raw_key)
        except TypeError:  # unhashable (a list or an object where a name belongs)
            k = None
        if k is None:
            k = key(item, field)
            if all(isinstance(x, str | None) for x in raw_key):
                keys[raw_key] = k
        served = item.get("served_at", now)
        heads.append(
            (text(item.get("id"), f"{field}.id", MAX_ID), k, timestamp(served, f"{field}.served_at", now))
        )
        raw.append(_raw_scores(item, field))
    lps = score_rows(raw)
    return [Prediction(pid, k, served_at, lp) for (pid, k, served_at), lp in zip(heads, lps, strict=True)]


def label_value(value: Any, field: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or not 0 <= value < MAX_CLASSES:
        raise FieldError(field, f"must be a class index (an integer in [0, {MAX_CLASSES})), got {value!r}")
    return value


def labels(doc: Any) -> list[Label]:
    out = []
    for i, item in enumerate(batch(doc, "labels")):
        field = f"labels[{i}]"
        if not isinstance(item, dict):
            raise FieldError(field, f"must be an object, got {type(item).__name__}")
        pid = text(item.get("id"), f"{field}.id", MAX_ID)
        if "token_nll" in item or "tokens" in item:
            try:
                token = check_token_label(item.get("token_nll"), item.get("tokens"))
            except ValueError as e:
                raise FieldError(f"{field}.token_nll", str(e)) from None
            out.append(Label(pid, -1, field, token))
        else:
            out.append(Label(pid, label_value(item.get("label"), f"{field}.label"), field))
    return out
