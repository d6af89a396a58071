"""Kubernetes-style duration strings ("30s", "5m", "1h30m", "1.5h", "250ms") backed by timedelta.

In Python a duration field is a `datetime.timedelta`; in YAML/JSON it is a Go-style duration string,
the same syntax Kubernetes CEL's `duration()` accepts, so the CRD can compare durations in rules.
Serialisation is canonical ("90s" reads back as "1m30s"), exact to the microsecond.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# Units a Go duration may carry that we accept (ns/us are pointless for rollouts).
_UNIT_US = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000}
_PART = re.compile(r"([0-9]+)(?:\.([0-9]+))?(ms|h|m|s)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$"
_FULL = re.compile(DURATION_PATTERN)
DURATION_MAX_LENGTH = 32


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m" / "30s" / "1.5h" / "250ms" (and "0s") into a timedelta.

    Raises ValueError with an example of the accepted syntax.
    """
    s = text.strip()
    if len(s) > DURATION_MAX_LENGTH or not _FULL.match(s):
        raise ValueError(
            f"invalid duration {text!r}: use a Kubernetes/Go duration such as 30s, 5m, 1h30m or 250ms"
        )
    total_us = 0
    for whole, frac, unit in _PART.findall(s):
        scale = _UNIT_US[unit]
        total_us += int(whole) * scale
        if frac:
            # Exact: the fraction's digits as an integer over a power of ten, rounded to microseconds.
            total_us += round(int(frac) * scale / 10 ** len(frac))
    return timedelta(microseconds=total_us)


def format_duration(value: timedelta) -> str:
    """Canonical Go-style string: 1h30m, 5m, 30s, 1.5s, 250ms, 0s. Negative values are refused."""
    total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if total_us < 0:
        raise ValueError(f"negative duration {value!r}")
    if total_us == 0:
        return "0s"
    hours, rest = divmod(total_us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if micros and not hours and not minutes and not seconds and micros % 1000 == 0:
        return out + f"{micros // 1000}ms"
    if seconds or micros:
        out += f"{seconds}.{micros:06d}".rstrip("0").rstrip(".") + "s"
    return out


def _validate(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool | int | float):
        raise ValueError(
            f"durations are strings with a unit, not bare numbers: write {value}s (seconds) or e.g. 5m"
        )
    raise ValueError(f"expected a duration string such as 30s or 5m, got {type(value).__name__}")


def _schema(min_rule: str | None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": DURATION_MAX_LENGTH,
    }
    if min_rule is not None:
        schema["x-kubernetes-validations"] = [
            {"rule": f"duration(self) >= duration('{min_rule}')", "message": f"must be at least {min_rule}"}
        ]
    return schema


Duration = Annotated[
    timedelta,
    BeforeValidator(_validate),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_schema(None)),
]
"""A non-negative duration: timedelta in Python, "5m" in YAML."""


def _positive(value: Any) -> timedelta:
    td = _validate(value)
    if td < timedelta(seconds=1):
        raise ValueError(f"must be at least 1s, got {format_duration(td)}")
    return td


PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(_positive),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_schema("1s")),
]
"""A duration of at least one second (intervals, timeouts)."""


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise ValueError(f"expected an RFC 3339 timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    out: datetime = value.astimezone(UTC)
    return out


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, as Kubernetes writes times (fractional seconds kept)."""
    return _timestamp(value).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A UTC datetime, serialised as RFC 3339 ("2025-01-02T03:04:05Z")."""
