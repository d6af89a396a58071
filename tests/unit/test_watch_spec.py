"""spec.postPromotion: defaults and the operator's own validation (the API server's CEL twin is in
tests/kube/bad_manifests)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from lossgate.model import validation_messages
from tests.unit.test_machine_rules import make_spec


def test_absent_means_no_watch_and_an_empty_block_means_5_percent_for_24h() -> None:
    assert make_spec().post_promotion is None
    pp = make_spec(postPromotion={}).post_promotion
    assert pp is not None
    assert (pp.holdback_weight, pp.window, pp.holdback) == (5, timedelta(hours=24), True)
    no_holdback = make_spec(postPromotion={"holdbackWeight": 0}).post_promotion
    assert no_holdback is not None
    assert no_holdback.holdback is False


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"holdbackWeight": 6}, "spec.postPromotion.holdbackWeight"),
        ({"window": "0s"}, "spec.postPromotion.window"),
        ({"window": "721h"}, "spec.postPromotion.window"),
    ],
)
def test_bad_values_name_the_field(over: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        make_spec(postPromotion=over)
    assert any(says in m for m in validation_messages(err.value, obj=None)), validation_messages(err.value)


def test_a_step_above_100_minus_the_holdback_is_refused_with_the_fix() -> None:
    # Given steps 50, 97, 100 and the default 5% holdback: the watch would lower the canary to 95%
    with pytest.raises(ValidationError) as err:
        make_spec(steps=[{"weight": 50}, {"weight": 97}, {"weight": 100}], postPromotion={})
    (msg,) = [m for m in validation_messages(err.value) if "holdbackWeight" in m]
    assert "spec.postPromotion.holdbackWeight" in msg
    assert "below step weight 97" in msg
    assert "fix: lower that step or the holdback" in msg
    # And 95 with a 5% holdback is fine
    assert make_spec(steps=[{"weight": 95}, {"weight": 100}], postPromotion={}).post_promotion is not None
