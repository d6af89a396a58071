"""The rough edges a new user hit in `lossgate replay` (issue 19), each pinned by a test: argument
errors, --plot into a missing folder, the bound a decision is printed with, a stable "samples needed",
the plot's y-range. Nothing here needs a server: every error is raised before Prometheus is read
(the address given is a closed port, so reaching it would be a different error)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from lossgate.cli.plot import y_limits
from lossgate.cli.replay import decision_line
from lossgate.cli.trail import Look, trail
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig
from tests.cli.conftest import run

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there
SERIES = ("--prometheus", CLOSED, "--model", "m", "--baseline", "a", "--canary", "b")


def test_a_bad_interval_is_one_line_and_exit_2() -> None:
    # When the interval has no unit
    r = run("replay", *SERIES, "--from", "now-1h", "--interval", "30")
    # Then one line names the flag and the accepted syntax, exit 2, no traceback
    assert r.rc == 2
    assert r.err.count("\n") == 1
    assert r.err.startswith("error: --interval: invalid duration '30'")
    assert "30s" in r.err
    assert "Traceback" not in r.err


def test_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    # When the canary's version is missing
    r = run("replay", "--prometheus", CLOSED, "--model", "m", "--baseline", "a", "--from", "now-1h")
    # Then exit 2 and one line naming what is missing
    assert (r.rc, r.err) == (
        2,
        "error: give --spec, or all of --model, --baseline and --canary (missing --canary)\n",
    )
    # And a missing --from is the same
    r = run("replay", *SERIES)
    assert (r.rc, r.err) == (
        2,
        "error: give --from T (or a ROLLOUT name, or --simulate with a rollout manifest)\n",
    )
    # And argparse's own errors (a value of the wrong type) are one line with exit 2 too
    from lossgate.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["replay", *SERIES, "--from", "now-1h", "--alpha-rollback", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == (
        "error: lossgate replay: argument --alpha-rollback: invalid float value: 'x' "
        "(see `lossgate replay --help`)\n"
    )


def test_a_bad_time_exits_2() -> None:
    r = run("replay", *SERIES, "--from", "yesterday")
    assert r.rc == 2
    assert r.err.startswith("error: bad time 'yesterday'")


def test_plot_into_a_missing_folder_fails_before_reading(tmp_path: Path) -> None:
    # Given a PNG path whose folder does not exist (and a Prometheus that cannot be reached)
    png = tmp_path / "no" / "such" / "replay.png"
    # When replay is asked to plot there
    r = run("replay", *SERIES, "--from", "now-1h", "--plot", str(png))
    # Then it stops at once on the plot's folder, not after reading and judging (a Prometheus error)
    assert r.rc == 2
    assert (
        r.err == f"error: --plot {png}: directory {png.parent} does not exist; create it or choose another\n"
    )


def _look(verdict: str, low: float, high: float, margin: float, **kw: float | bool) -> Look:
    values: dict[str, float | bool] = dict(p_regression=0.5, p_not_worse=0.04, catastrophic=False,
                                            p_catastrophic=1.0)  # fmt: skip
    values.update(kw)
    return Look(9, 0.0, 270.0, 9000.0, 4500.0, 0.0010, low, high, float(values["p_regression"]),
                float(values["p_not_worse"]), margin, verdict, 0, bool(values["catastrophic"]),
                float(values["p_catastrophic"]))  # fmt: skip


def test_a_promotion_is_shown_with_the_one_sided_bound_its_test_uses() -> None:
    config = JudgeConfig(margin=0.0069)
    # Given a NotWorse look: the one-sided 95% upper bound is below the margin
    ok = decision_line(_look("NotWorse", -0.0050, 0.0061, 0.0069), config)
    # Then the line shows that bound and the test, not a two-sided interval
    assert ok.startswith("would PROMOTE (non-inferiority test: one-sided 95% upper bound +0.0061 < margin "
                         "0.0069, p(not worse) 0.04 <= 0.05)")  # fmt: skip
    # Given a NotWorse look whose displayed upper bound is above the margin (the report: the
    # test passed at an earlier look's margin)
    odd = decision_line(_look("NotWorse", -0.0050, 0.0074, 0.0069), config)
    # Then the bound above the margin is never printed beside the promotion
    assert "+0.0074" not in odd
    assert "PROMOTE (non-inferiority test: p(not worse) 0.04 <= 0.05)" in odd


def test_a_rollback_names_its_rule() -> None:
    config = JudgeConfig(margin=0.02)
    cat = decision_line(_look("Regression", 0.01, 0.2, 0.02, catastrophic=True, p_catastrophic=2e-4), config)
    assert "ROLL BACK (catastrophic guard: " in cat
    assert "p 0.0002 <= 0.001" in cat
    reg = decision_line(_look("Regression", 0.025, 0.2, 0.02, p_regression=0.004), config)
    assert "ROLL BACK (regression test: one-sided 99% lower bound +0.0250 > margin 0.0200, " in reg


def noisy_equal_arms(looks: int, seed: int = 19) -> list[IntervalStats]:
    """Both arms with the same mean loss; each interval's mean drawn with its sampling noise."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(looks):
        arms = []
        for n in (600.0, 600.0):
            mean = 0.35 + rng.normal(0.0, 0.6 / math.sqrt(n))
            arms.append(ArmStats(n=n, sum=n * mean, sumsq=n * (0.36 + mean * mean), tail=1.0))
        out.append(IntervalStats(30.0 * k, 30.0 * (k + 1), arms[0], arms[1], None))
    return out


def test_samples_needed_if_equal_is_stable_where_the_projection_swings() -> None:
    # Given equal arms with sampling noise, judged against a margin of 0.0069 nats
    looks = trail(noisy_equal_arms(60), JudgeConfig(margin=0.0069, min_samples_before_promote=0))
    later = [lk for lk in looks[4:] if lk.verdict in ("Undecided", "InsufficientData")]
    assert len(later) > 20
    # Then the projection at the current estimate swings by orders of magnitude between looks
    swing = max(lk.samples_needed for lk in later) / max(1, min(lk.samples_needed for lk in later))
    assert swing > 10
    # While the figure replay shows moves smoothly: under 15% from one look to the next, always down
    shown = [lk.samples_needed_if_equal for lk in later]
    for a, b in itertools.pairwise(shown):
        assert b <= a * 1.01
        assert b >= a * 0.85 - 700  # each look adds ~600 canary samples
    # And it is finite: reachable at this traffic
    assert 0 < shown[-1] < 1_000_000


def test_the_y_range_keeps_the_late_interval_and_the_margin_readable() -> None:
    # Given a trail whose first looks are tens of times wider than the late ones
    looks = trail(noisy_equal_arms(60), JudgeConfig(margin=0.0069))
    lo, hi, clipped = y_limits(looks)
    late = looks[-1]
    # Then the range holds zero, the margin and the late interval, and is at most a few late widths
    assert lo < min(0.0, late.cs_low)
    assert hi > max(late.margin, late.cs_high)
    assert hi - lo < 4 * (late.cs_high - late.cs_low)
    # And the early looks drawn past it are counted (the plot says so)
    assert clipped >= 1
    assert looks[1].cs_high > hi
