"""The views render objects the operator has not written a status for yet (pure; no server)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from lossgate.cli.get import console_for, print_plain, render
from lossgate.core.machine import decide
from lossgate.core.observation import LossEvidence, Observation
from lossgate.core.paired_step import PairedEvidence
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
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


def test_a_shadow_rollout_shows_the_mirror_and_the_paired_numbers() -> None:
    # Given a rollout in its shadow step, with the status decide() writes there

    steps = [{"shadow": {"mirrorPercent": 30}}, {"weight": 5}, {"weight": 100}]
    obj = manifest("sh", steps=steps) | {"metadata": {"name": "sh", "namespace": "ml-prod"}}
    spec = ModelRolloutSpec.model_validate(obj["spec"])
    paired = PairedEvidence(
        LossVerdict.UNDECIDED, n=4321, delta=0.0021, cs_low=-0.004, cs_high=0.009, margin=0.02, alpha=0.005,
        p_regression=0.5, p_not_worse=0.2,
    )  # fmt: skip
    o = Observation(generation=1, loss=LossEvidence(LossVerdict.INSUFFICIENT_DATA), paired=paired)
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    s = decide(spec, ModelRolloutStatus(), o, t0).status
    obj["status"] = decide(spec, s, o, t0).status.to_wire()
    # When it is drawn
    out = rendered([obj], "sh")
    # Then the steps name the shadow, the mirror and the paired test's numbers are shown
    field = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}
    assert field["Step"] == "1/3 (weights shadow(30%) 5 100)"
    assert field["Weights"] == "baseline 100% canary 0%"
    assert field["Mirror"].startswith("30% of the baseline's requests")
    assert field["Paired"].startswith("Undecided: d +0.0021 nats")
    assert "4,321 pairs" in field["Paired"]
    assert field["Paired-p"] == "regression 0.5 (alpha 0.0050) not worse 0.2"
