"""The views render objects the operator has not written a status for yet (pure; no server)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from lossgate.cli.get import console_for, print_plain, render
from tests.cli.conftest import manifest


def rendered(objs: list[dict[str, object]], name: str | None) -> str:
    out = io.StringIO()
    print_plain(console_for(out), render(objs, name), out)
    return out.getvalue()


def test_a_rollout_without_status_shows_as_pending() -> None:
    # Given a ModelRollout as applied, before the operator's first tick
    obj = manifest("fresh") | {"metadata": {"name": "fresh", "namespace": "ml-prod",
                                            "creationTimestamp": datetime.now(UTC).isoformat()}}  # fmt: skip
    # When it is drawn alone and in the list
    detail, listing = rendered([obj], "fresh"), rendered([obj], None)
    # Then it is Pending at step 0/4 with 0% canary, and no analysis rows
    field = {line.split()[0]: " ".join(line.split()[1:]) for line in detail.splitlines() if line.strip()}
    assert field["Phase"] == "Pending"
    assert field["Step"] == "0/4 (weights 5 25 50 100)"
    assert field["Weights"] == "baseline 100% canary 0%"
    assert "Verdict" not in field
    row = listing.splitlines()[1].split()
    assert row[:7] == ["ml-prod", "fresh", "Pending", "0/4", "0%", "-/-", "-"]
    assert rendered([], None).strip() == "No ModelRollouts found."
