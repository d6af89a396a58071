"""Replicas of one Deployment get distinct kopf peering priorities (kopf pauses all on a tie)."""

from __future__ import annotations

import pytest

from lossgate.reconcile.main import peering_priority


def test_explicit_priority_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSGATE_PEERING_PRIORITY", " 250 ")
    assert peering_priority() == 250


def test_random_positive_priority_per_process_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOSSGATE_PEERING_PRIORITY", raising=False)
    got = {peering_priority() for _ in range(20)}
    assert all(1 <= p < 2**31 for p in got)
    assert len(got) > 1  # distinct draws (a tie of 20 draws out of 2**31 values does not happen)


def test_a_non_integer_priority_stops_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSGATE_PEERING_PRIORITY", "high")
    with pytest.raises(SystemExit, match="LOSSGATE_PEERING_PRIORITY='high' is not an integer"):
        peering_priority()
