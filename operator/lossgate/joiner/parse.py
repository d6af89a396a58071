"""JSON batches in, Predictions and Labels out; every refusal names the field (nothing is stored
from a batch with one bad item)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from lossgate.instrument.losses import log_probs
from lossgate.joiner.records import FieldError, Label, Prediction, SeriesKey

MAX_BATCH = 10_000
MAX_ID = 256  # characters of a prediction id
MAX_NAME = 128  # characters of a model, version or class
MAX_CLASSES = 4096
MAX_FUTURE_S = 300.0  # serving times this far ahead of the joiner's clock are refused (clock skew)


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
    if any(ord(c) < 32 for c in s):
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


def scores(item: dict[str, Any], field: str, kind: str | None = None) -> bytes:
    """The item's probabilities or logits as float64 log-probability bytes."""
    keys = [k for k in ("probabilities", "logits") if k in item]
    if len(keys) != 1:
        raise FieldError(field, "give exactly one of probabilities or logits")
    values = item[keys[0]]
    where = f"{field}.{keys[0]}"
    if isinstance(values, list):
        if len(values) > MAX_CLASSES:
            raise FieldError(where, f"at most {MAX_CLASSES} classes, got {len(values)}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise FieldError(where, "must be numbers")
    elif isinstance(values, bool) or not isinstance(values, int | float):
        raise FieldError(where, f"must be a number or a list of numbers, got {type(values).__name__}")
    try:
        lp = log_probs(**{keys[0]: values})
    except ValueError as e:
        raise FieldError(where, str(e)) from None
    return lp.tobytes()


def key(item: dict[str, Any], field: str) -> SeriesKey:
    model = text(item.get("model"), f"{field}.model", MAX_NAME)
    version = text(item.get("version"), f"{field}.version", MAX_NAME)
    klass = item.get("class")
    return (model, version, None if klass is None else text(klass, f"{field}.class", MAX_NAME))


def predictions(doc: Any, now: float) -> list[Prediction]:
    out = []
    for i, item in enumerate(batch(doc, "predictions")):
        field = f"predictions[{i}]"
        if not isinstance(item, dict):
            raise FieldError(field, f"must be an object, got {type(item).__name__}")
        served = item.get("served_at", now)
        out.append(
            Prediction(
                text(item.get("id"), f"{field}.id", MAX_ID),
                key(item, field),
                timestamp(served, f"{field}.served_at", now),
                scores(item, field),
            )
        )
    return out


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
        out.append(
            Label(
                text(item.get("id"), f"{field}.id", MAX_ID),
                label_value(item.get("label"), f"{field}.label"),
                field,
            )
        )
    return out
