"""`lossgate get` shows status.calibration and `lossgate plot` draws the reliability diagram (pure; no
server: the status is the one core.calibration writes)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from lossgate.cli.get import console_for, print_plain, render
from lossgate.cli.reliability_plot import draw_reliability, reliability_path
from lossgate.conventions import CALIBRATION_BINS
from lossgate.core import calibration
from lossgate.core.calibration import Bins
from tests.cli.conftest import manifest
from tests.cli.png import TAB_ORANGE, colour_share, dimensions


def _arm(n: float, bins: dict[int, tuple[float, float]]) -> Bins:
    """n predictions spread over `bins` (share, accuracy); confidence at the bin's centre."""
    count, conf, correct = [0.0] * CALIBRATION_BINS, [0.0] * CALIBRATION_BINS, [0.0] * CALIBRATION_BINS
    for b, (share, acc) in bins.items():
        count[b] = n * share
        conf[b] = n * share * (b + 0.5) / CALIBRATION_BINS
        correct[b] = n * share * acc
    brier = [c * 0.3 for c in count]
    return Bins(tuple(count), tuple(conf), tuple(correct), tuple(brier))


BASELINE = _arm(4000, {9: (0.3, 0.63), 12: (0.4, 0.83), 14: (0.3, 0.97)})
CANARY = _arm(1000, {10: (0.2, 0.55), 13: (0.4, 0.70), 14: (0.4, 0.80)})  # overconfident
STATUS = calibration.status((BASELINE, CANARY), datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


def test_get_shows_both_arms_ece_mce_and_brier() -> None:
    # Given a rollout whose status carries the calibration core.calibration computed
    obj = manifest("cal") | {"metadata": {"name": "cal", "namespace": "ml-prod"}}
    obj["status"] = {"phase": "Progressing", "calibration": STATUS.to_wire()}
    # When it is drawn
    out = io.StringIO()
    print_plain(console_for(out), render([obj], "cal"), out)
    text = " ".join(out.getvalue().split())
    # Then one Calibration line gives each arm's ECE, MCE and Brier score and the bins
    b, c = STATUS.baseline, STATUS.canary
    assert b.ece is not None
    assert c.ece is not None
    assert c.mce is not None
    assert f"baseline ECE {b.ece:.4f}" in text
    assert f"canary ECE {c.ece:.4f} MCE {c.mce:.4f} Brier 0.3000" in text
    assert "(n 1,000)" in text
    assert f"({CALIBRATION_BINS} bins)" in text
    assert c.ece > b.ece


def test_plot_draws_the_reliability_diagram_of_both_arms(tmp_path: Path) -> None:
    # When the reliability diagram is drawn next to a plot's path
    out = reliability_path(str(tmp_path / "cal.png"))
    draw_reliability(STATUS, out, title="ml-prod/cal: reliability of both arms")
    # Then it is a real picture beside the plot, with the canary's orange curve and bars in it
    assert out == str(tmp_path / "cal-reliability.png")
    assert dimensions(Path(out)) == (700, 750)
    assert colour_share(Path(out), TAB_ORANGE) > 0.002
