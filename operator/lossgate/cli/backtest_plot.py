"""The picture of a backtest: the judge's trail as the simulated rollout judged it (its own weight
timeline as strata, the intervals thinned to each step's split for an A/B history), the simulated
step boundaries, and the rollout's decision marked with the rule that made it."""

from __future__ import annotations

from lossgate.cli.backtest_cmd import History
from lossgate.cli.plot import draw
from lossgate.cli.trail import Look, trail
from lossgate.core.backtest import Backtest, reweighted
from lossgate.core.decision import DecisionKind
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.timeline import weight_timeline, with_weights
from lossgate.model import ModelRolloutSpec

# Why the state machine ended the rollout, in words for the plot (the judge's rules read off Look.rule).
_RULES = {
    "LossRegression": "regression test",
    "CatastrophicLoss": "catastrophic guard",
    "StepTimedOut": "maxDuration, onMaxDuration",
    "PromotedNonInferior": "non-inferiority test",
    "PromotedNoRegression": "quotas met, no regression",
    "PromotedOnTimeout": "maxDuration, onMaxDuration Advance",
}


def backtest_looks(config: JudgeConfig, h: History, bt: Backtest) -> list[Look]:
    """The judge's trail up to the rollout's last tick, as the backtest's ticks judged it."""
    st, last = bt.status, bt.ticks[-1].time.timestamp() - h.lag.total_seconds() if bt.ticks else 0.0
    timeline = weight_timeline(st)
    ivs = [iv for iv in h.intervals if iv.end <= last + 1e-6]
    if h.split is not None:
        ivs = [reweighted(iv, _weight(timeline, iv.start), h.split) for iv in ivs]
    return trail(with_weights(ivs, timeline), config)


def _weight(timeline: list[tuple[float, int]], at: float) -> int:
    w = 0
    for start, weight in timeline:
        if start <= at + 1e-6:
            w = weight
    return w


def draw_backtest(spec: ModelRolloutSpec, config: JudgeConfig, h: History, bt: Backtest, path: str) -> None:
    looks = backtest_looks(config, h, bt)
    end = bt.outcome
    decision, mark = None, None
    if end is not None and looks:
        decision = looks[-1]
        mark = (end.kind == DecisionKind.ROLLBACK, _RULES.get(end.reason, end.reason))
    weights = [(s.at, s.weight) for s in bt.status.step_starts]
    title = (f"{spec.model}: canary {spec.canary.version} vs {spec.baseline.version} "
             f"(backtest, {h.mode}){'' if end is None else f': {end.kind} at step {end.step}'}")  # fmt: skip
    draw(looks, path, title=title, decision=decision, weights=weights, mark=mark)
