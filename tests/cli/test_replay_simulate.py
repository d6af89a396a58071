"""`lossgate replay --spec rollout.yaml --simulate`: the state machine (decide()) run over an A/B history
in a real Prometheus (backfilled with promtool) on a virtual clock: steps, quotas, maxDuration and
onMaxDuration, the regression rule; every decision equal to core.backtest on the same intervals."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.backtest import backtest, reweighted
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.model import ModelRolloutSpec
from lossgate_dev.devenv.prom import Prometheus
from tests.cli.conftest import manifest, run
from tests.cli.png import TAB_PURPLE, TAB_RED, colour_share, dimensions
from tests.cli.promdata import ArmPlan, History

pytestmark = pytest.mark.prom
INTERVALS = 60


def history(canary_mean: float, model: str) -> History:
    """30 minutes at a fixed 50/50 split, three hours ago."""
    start = int(time.time()) // 60 * 60 - 3 * 3600
    return History(model, start, 30, INTERVALS, ArmPlan("v41", 400, 0.40, 0.6, 500),
                   ArmPlan("v42", 400, canary_mean, 0.6, 500))  # fmt: skip


def simulate(
    prometheus: Prometheus, tmp_path: Path, h: History, *extra: str, **spec: Any
) -> tuple[dict[str, Any], Any]:
    body = manifest("x", prometheus=prometheus.url, model=h.model, **spec)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(body))
    r = run("replay", "--spec", str(path), "--simulate", "--from", str(h.start),
            "--to", str(h.start + INTERVALS * 30), "-o", "json", *extra)  # fmt: skip
    assert r.rc == 0, r.err
    parsed = ModelRolloutSpec.model_validate(body["spec"])
    origin = datetime.fromtimestamp(h.start, UTC)
    end = origin + timedelta(seconds=INTERVALS * 30)
    want = backtest(parsed, judge_config(parsed), h.expected(), origin, end, recorded_split=0.5)
    return r.json(), want


def test_a_regressing_canary_is_rolled_back_on_the_virtual_clock(
    prometheus: Prometheus, tmp_path: Path
) -> None:
    # Given an A/B history at 50/50 where the canary's loss is 0.07 nats above the baseline's
    h = history(0.47, "sim-regress")
    prometheus.backfill(h.openmetrics())
    # When the rollout is simulated with one 10-minute analysis step at 50% (the recorded split)
    png = tmp_path / "backtest.png"
    doc, want = simulate(prometheus, tmp_path, h, "--plot", str(png), steps=[{"weight": 50}, {"weight": 100}],
                         stepDefaults={"minSamples": 300, "minDuration": "10m"})  # fmt: skip
    # Then the decisions are core.backtest's on the intervals the counters imply
    assert doc["moves"] == [
        {"time": t.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "kind": t.kind, "reason": t.reason, "step": t.step}
        for t in want.moves
    ]
    # And they are: start at --from, then a rollback for the loss regression, after minSamplesBeforeRollback
    assert [(m["kind"], m["reason"]) for m in doc["moves"]] == [
        ("Start", "Started"),
        ("Rollback", "LossRegression"),
    ]
    assert doc["moves"][0]["time"] == doc["origin"]
    last = doc["ticks"][-1]
    assert last["n_canary"] >= 1000
    assert last["cs_low"] > last["margin"] == 0.02
    assert doc["outcome"].startswith("Rollback (LossRegression) at ")
    assert doc["recordedSplit"] == 0.5
    # And --plot draws the judge's trail as the simulated rollout judged it, the step boundary and the
    # rollback (red) marked with its rule
    assert dimensions(png) == (1100, 650)
    assert colour_share(png, TAB_RED) > 0.001
    assert colour_share(png, TAB_PURPLE) > 0.0002
    # And the table says the same: one line per traffic move, then the outcome
    table = run("replay", "--spec", str(tmp_path / "rollout.yaml"), "--simulate", "--from", str(h.start),
                "--to", str(h.start + INTERVALS * 30))  # fmt: skip
    lines = table.out.splitlines()
    assert lines[0].startswith("note: A/B history at a fixed split (50.0% canary)")
    assert [line.split()[1:3] for line in lines[2:4]] == [
        ["Start", "Started"],
        ["Rollback", "LossRegression"],
    ]
    assert lines[4] == f"replay: {doc['outcome']}"


def test_steps_quotas_and_max_duration_are_replayed(prometheus: Prometheus, tmp_path: Path) -> None:
    # Given an A/B history at 50/50 where both arms have the same loss
    h = history(0.40, "sim-equal")
    prometheus.backfill(h.openmetrics())
    # When a 3-step rollout is simulated: 25% (canary thinned to a third), 50%, then 100%
    doc, want = simulate(prometheus, tmp_path, h, steps=[{"weight": 25}, {"weight": 50}, {"weight": 100}],
                         stepDefaults={"minSamples": 300, "minDuration": "2m"})  # fmt: skip
    moves = doc["moves"]
    assert [(m["kind"], m["step"]) for m in moves] == [(t.kind, t.step) for t in want.moves]
    assert [m["kind"] for m in moves] == ["Start", "Advance", "Promote"]
    # Then no step ends before its minDuration (2m) and its minSamples (300) canary samples
    ticks = doc["ticks"]
    advance = next(t for t in ticks if t["kind"] == "Advance")
    before = [t for t in ticks if t["time"] < advance["time"]]
    assert _t(advance["time"]) - _t(doc["origin"]) >= timedelta(minutes=2)
    assert before[-1]["samples_in_step"] >= 300
    # And the promotion waited for minSamplesBeforePromotion (2000)
    assert ticks[-1]["n_canary"] >= 2000
    # When step 1 may last at most 3 minutes and must roll back then, with a rollback quota it cannot
    # reach at 10% (the canary thinned to a ninth: ~44 samples per interval)
    doc, want = simulate(prometheus, tmp_path, h, steps=[{"weight": 10}, {"weight": 100}],
                         stepDefaults={"minSamples": 300, "minDuration": "1m", "maxDuration": "3m",
                                       "onMaxDuration": "Rollback"})  # fmt: skip
    # Then the step times out: rolled back at 3 minutes (StepTimedOut)
    assert [(m["kind"], m["reason"]) for m in doc["moves"]] == [
        ("Start", "Started"),
        ("Rollback", "StepTimedOut"),
    ]
    assert _t(doc["moves"][1]["time"]) - _t(doc["origin"]) == timedelta(minutes=3)
    assert [(t.kind, t.reason) for t in want.moves] == [("Start", "Started"), ("Rollback", "StepTimedOut")]


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_reweighting_thins_one_arm_to_the_steps_split() -> None:
    # Given an interval recorded at a 50/50 split
    arm = ArmStats(n=400.0, sum=160.0, sumsq=208.0, tail=2.0)
    iv = IntervalStats(0.0, 30.0, arm, arm, None)
    # Then at 10% the canary keeps a ninth (10:90), at 80% the baseline keeps a quarter (80:20)
    low, high = reweighted(iv, 10, 0.5), reweighted(iv, 80, 0.5)
    assert low.baseline == arm
    assert low.canary.n == pytest.approx(400 / 9)
    assert high.canary == arm
    assert high.baseline.n == pytest.approx(100.0)
    # And each arm's mean and mean square are kept (only its sample count shrinks)
    for got in (low.canary, high.baseline):
        assert got.sum / got.n == pytest.approx(0.4)
        assert got.sumsq / got.n == pytest.approx(0.52)


def test_a_sweep_over_margins_and_alphas(prometheus: Prometheus, tmp_path: Path) -> None:
    # Given the regressing A/B history (canary +0.07 nats) and a one-step rollout of at most 30 minutes
    h = history(0.47, "sim-sweep")
    prometheus.backfill(h.openmetrics())
    body = manifest("x", prometheus=prometheus.url, model=h.model, steps=[{"weight": 50}, {"weight": 100}],
                    stepDefaults={"minSamples": 300, "minDuration": "10m"})  # fmt: skip
    path, png = tmp_path / "rollout.yaml", tmp_path / "sweep.png"
    path.write_text(yaml.safe_dump(body))
    # When replay sweeps four margins and two alpha pairs
    r = run("replay", "--spec", str(path), "--simulate", "--from", str(h.start), "--to",
            str(h.start + INTERVALS * 30), "--sweep-margin", "0.01,0.02,0.03,0.1",
            "--sweep-alpha", "0.01/0.05,0.001/0.01", "-o", "json", "--plot", str(png))  # fmt: skip
    assert r.rc == 0, r.err
    rows = r.json()["settings"]
    # Then there is one row per setting, each as a backtest with that margin and those alphas decides
    assert len(rows) == 8
    parsed = ModelRolloutSpec.model_validate(body["spec"])
    origin = datetime.fromtimestamp(h.start, UTC)
    for row in rows:
        alphas = {"alpha_rollback": row["alpha_rollback"], "alpha_promote": row["alpha_promote"]}
        config = replace(judge_config(parsed), margin=row["margin"], relative_margin=None, **alphas)
        bt = backtest(parsed, config, h.expected(), origin, origin + timedelta(seconds=INTERVALS * 30),
                      recorded_split=0.5)  # fmt: skip
        assert row["decision"] == (bt.outcome.kind if bt.outcome else "none"), row
    # And small margins roll back, sooner the smaller; a margin above the true difference (0.1 > 0.07)
    # promotes when the 10-minute step ends
    by = {(row["margin"], row["alpha_rollback"]): row for row in rows}
    for alpha in (0.01, 0.001):
        assert [by[(m, alpha)]["decision"] for m in (0.01, 0.02)] == ["Rollback", "Rollback"]
        assert by[(0.01, alpha)]["minutes"] < by[(0.02, alpha)]["minutes"]
        assert by[(0.1, alpha)]["decision"] == "Promote"
        # And a stricter alpha never decides sooner
        assert by[(0.01, 0.001)]["minutes"] >= by[(0.01, 0.01)]["minutes"]
    # And the trade-off a sweep is for: at 0.03 nats the stricter alphas do not show the regression
    # within the step, and the NoRegression policy promotes the worse canary
    assert (by[(0.03, 0.01)]["decision"], by[(0.03, 0.01)]["reason"]) == ("Rollback", "LossRegression")
    assert (by[(0.03, 0.001)]["decision"], by[(0.03, 0.001)]["reason"]) == ("Promote", "PromotedNoRegression")
    assert dimensions(png) == (900, 650)
    assert colour_share(png, TAB_RED) > 0.0005
