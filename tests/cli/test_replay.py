"""`lossgate replay` against a real Prometheus backfilled (promtool) with known loss counters: every
look equals judge.evaluate on the same intervals; the decision, the table and the PNG."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.judge import JudgeConfig, evaluate
from lossgate.model import ModelRolloutSpec
from lossgate_dev.devenv.prom import Prometheus
from tests.cli.conftest import manifest, run
from tests.cli.png import TAB_BLUE, TAB_ORANGE, TAB_RED, colour_share, dimensions
from tests.cli.promdata import ArmPlan, History

pytestmark = pytest.mark.prom
INTERVALS = 40


def regressing_canary() -> History:
    """20 minutes, three hours ago: the canary's mean loss is 0.07 nats above the baseline's."""
    start = int(time.time()) // 60 * 60 - 3 * 3600
    return History("fraud-scorer", start, 30, INTERVALS, ArmPlan("v41", 400, 0.40, 0.6, 500),
                   ArmPlan("v42", 200, 0.47, 0.6, 500))  # fmt: skip


def test_replay_decisions_equal_the_judges(prometheus: Prometheus, tmp_path: Path) -> None:
    # Given 40 intervals of known counters for both arms in Prometheus
    h = regressing_canary()
    prometheus.backfill(h.openmetrics())
    png = tmp_path / "replay.png"
    # When replay runs over the window with a 0.02-nat margin
    r = run("replay", "--prometheus", prometheus.url, "--model", "fraud-scorer", "--baseline", "v41",
            "--canary", "v42", "--from", str(h.start), "--to", str(h.start + INTERVALS * 30),
            "--interval", "30s", "--margin", "0.02", "--min-samples-before-rollback", "1000",
            "--min-samples-before-promotion", "2000", "-o", "json", "--plot", str(png))  # fmt: skip
    assert r.rc == 0, r.err
    doc = r.json()
    # Then every look is judge.evaluate on the same intervals (the counters' differences), prefix by prefix
    config = JudgeConfig(margin=0.02, min_samples_before_rollback=1000, min_samples_before_promote=2000)
    intervals = h.expected()
    assert len(doc["looks"]) == len(intervals) == INTERVALS
    verdicts = []
    for k, look in enumerate(doc["looks"], 1):
        want = evaluate(intervals[:k], config)
        verdicts.append(want.verdict.value)
        assert look["verdict"] == want.verdict.value, k
        assert (look["n_baseline"], look["n_canary"]) == (want.n_baseline, want.n_canary), k
        assert look["samples_needed"] == want.samples_needed, k
        for field in ("delta", "cs_low", "cs_high", "p_regression", "p_not_worse", "margin"):
            got, exp = look[field], getattr(want, "theta_hat" if field == "delta" else field)
            assert math.isclose(got, exp, rel_tol=1e-9, abs_tol=1e-12), (k, field, got, exp)
        assert look["end"] == h.start + 30 * k
    # And the decision is the first Regression look, with the numbers that justified it
    first = verdicts.index("Regression") + 1
    assert 3 <= first < INTERVALS
    assert set(verdicts[: first - 1]) <= {"InsufficientData", "Undecided"}
    assert doc["decision"]["look"] == first
    assert doc["decision"]["cs_low"] > 0.02
    assert doc["outcome"].startswith("would ROLL BACK (regression test: one-sided 99% lower bound ")
    assert doc["decision"]["rule"] == "regression test"
    assert doc["decision"]["catastrophic"] is False
    assert doc["decision"]["p_catastrophic"] > 0.001
    # And the PNG is a real picture: 1100x650, tens of kB, with the CS band, the margin and the samples
    assert dimensions(png) == (1100, 650)
    assert png.stat().st_size > 30_000
    assert colour_share(png, TAB_BLUE) > 0.002
    assert colour_share(png, TAB_RED) > 0.001
    assert colour_share(png, TAB_ORANGE) > 0.0005


def test_replay_with_a_spec_prints_the_trail(prometheus: Prometheus, tmp_path: Path) -> None:
    # Given the same data and a ModelRollout manifest naming Prometheus, the versions and the margin
    h = regressing_canary()
    prometheus.backfill(h.openmetrics())
    spec = tmp_path / "rollout.yaml"
    spec.write_text(yaml.safe_dump(manifest("fraud-scorer", prometheus=prometheus.url)))
    # When replay reads everything from the spec
    args = ("replay", "--spec", str(spec), "--from", str(h.start), "--to", str(h.start + INTERVALS * 30))
    table, doc = run(*args), run(*args, "-o", "json").json()
    # Then the table has one row per look with the same numbers as the JSON, and the outcome line
    assert table.rc == 0, table.err
    assert "margin 0.0200 nats, alpha rollback 0.01 / promote 0.05" in table.out
    rows = [line.split() for line in table.out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[0]) for row in rows] == list(range(1, INTERVALS + 1))
    d = doc["decision"]
    row = rows[d["look"] - 1]
    assert row[3:6] == [f"{d['n_baseline']:,.0f}", f"{d['n_canary']:,.0f}", f"{d['delta']:+.4f}"]
    assert row[-2] == "Regression"
    assert table.out.strip().splitlines()[-1] == doc["outcome"]
    # And with --weight the window is one stratum at that split whose first interval is dropped, as the
    # operator drops the first interval after a weight change
    tagged = run(*args, "--weight", "25", "-o", "json").json()["looks"]
    config = judge_config(ModelRolloutSpec.model_validate(manifest("x", prometheus=prometheus.url)["spec"]))
    intervals = h.expected(weight=25)
    assert [lk["verdict"] for lk in tagged] == [
        evaluate(intervals[:k], config).verdict.value for k in range(1, INTERVALS + 1)
    ]
    assert tagged[0]["n_canary"] == 0
    assert tagged[1]["n_canary"] == intervals[1].canary.n


def test_json_says_which_rule_rolled_back_and_what_the_window_drops(prometheus: Prometheus) -> None:
    # Given a canary with the same mean loss but 25 times the baseline's rate of losses above 4.6 nats
    start = int(time.time()) // 60 * 60 - 3 * 3600
    h = History("cat-scorer", start, 30, 20, ArmPlan("v41", 400, 0.40, 0.6, 500),
                ArmPlan("v42", 400, 0.40, 0.6, 20))  # fmt: skip
    prometheus.backfill(h.openmetrics())
    # When replay runs with a wide margin (the mean alone never rolls back)
    args = ("replay", "--prometheus", prometheus.url, "--model", "cat-scorer", "--baseline", "v41",
            "--canary", "v42", "--from", str(start), "--to", str(start + 600), "--interval", "30s",
            "--margin", "0.5", "--weight", "50")  # fmt: skip
    doc = run(*args, "-o", "json").json()
    # Then the JSON names the catastrophic guard as the rule, with its p-value, at every look
    d = doc["decision"]
    assert (d["verdict"], d["rule"], d["catastrophic"]) == ("Regression", "catastrophic guard", True)
    assert d["p_catastrophic"] <= 0.001
    assert all("p_catastrophic" in lk and "catastrophic" in lk for lk in doc["looks"])
    assert doc["outcome"].startswith("would ROLL BACK (catastrophic guard: ")
    # And it says that the counters at --from are the base and that --weight drops the first interval
    base, dropped = doc["notes"]
    assert base.startswith(f"the counters at --from ({doc['from']}) are the base: the first look is")
    assert dropped.startswith("--weight 50: the first interval (")
    assert "is dropped" in dropped
    table = run(*args)
    assert f"note: {base}" in table.out.replace("\n", " ")


def test_replay_without_data_is_a_clear_error(prometheus: Prometheus) -> None:
    r = run("replay", "--prometheus", prometheus.url, "--model", "m", "--baseline", "a", "--canary", "b",
            "--from", "now-10m")  # fmt: skip
    assert r.rc == 1
    assert r.err.startswith("error: Prometheus (NoData): no series at Prometheus")
