"""Kubernetes-style duration strings and RFC 3339 timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from lossgate.model import Duration, PositiveDuration, Timestamp, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("30s", timedelta(seconds=30), "30s"),
        ("5m", timedelta(minutes=5), "5m"),
        ("1h30m", timedelta(hours=1, minutes=30), "1h30m"),
        ("90s", timedelta(seconds=90), "1m30s"),
        ("1.5h", timedelta(hours=1, minutes=30), "1h30m"),
        ("250ms", timedelta(milliseconds=250), "250ms"),
        ("1s500ms", timedelta(seconds=1.5), "1.5s"),
        ("0s", timedelta(0), "0s"),
        ("48h", timedelta(days=2), "48h"),
        ("0.000001s", timedelta(microseconds=1), "0.000001s"),
    ],
)
def test_parse_and_format(text: str, expected: timedelta, canonical: str) -> None:
    assert parse_duration(text) == expected
    assert format_duration(expected) == canonical
    assert parse_duration(canonical) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "5min", "1d", "-5m", "m", "1h 30m", "1.s", "9" * 40 + "s"])
def test_invalid_strings(text: str) -> None:
    with pytest.raises(ValueError, match="30s, 5m, 1h30m"):
        parse_duration(text)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_round_trip_exact_to_the_microsecond(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


class _M(BaseModel):
    d: Duration
    p: PositiveDuration = timedelta(seconds=1)
    t: Timestamp | None = None


def test_in_a_model() -> None:
    m = _M.model_validate({"d": "1h30m", "p": "10s", "t": "2025-01-02T03:04:05Z"})
    assert m.d == timedelta(minutes=90)
    assert m.t == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert m.model_dump(mode="json") == {"d": "1h30m", "p": "10s", "t": "2025-01-02T03:04:05Z"}
    assert _M(d=timedelta(seconds=5)).d == timedelta(seconds=5)


def test_bare_numbers_and_tiny_positive_durations_are_refused() -> None:
    with pytest.raises(ValidationError, match="not bare numbers: write 30s"):
        _M.model_validate({"d": 30})
    with pytest.raises(ValidationError, match="at least 1s"):
        _M.model_validate({"d": "1s", "p": "500ms"})
    with pytest.raises(ValidationError, match="cannot be negative"):
        _M(d=timedelta(seconds=-1))


def test_timestamps_are_utc() -> None:
    east = timezone(timedelta(hours=2))
    m = _M(d=timedelta(0), t=datetime(2025, 1, 1, 2, 0, tzinfo=east))
    assert m.model_dump(mode="json")["t"] == "2025-01-01T00:00:00Z"
    naive = _M.model_validate({"d": "0s", "t": "2025-01-01T00:00:00.250000"})
    assert naive.t == datetime(2025, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert naive.model_dump(mode="json")["t"] == "2025-01-01T00:00:00.250000Z"
