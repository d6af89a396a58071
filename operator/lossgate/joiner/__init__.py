"""lossgate.joiner: a standalone, durable label-join service (`lossgate joiner`).

Model servers (or their platform's request logger) send predictions, label sources send labels by
prediction id; the joiner computes each labelled prediction's cross-entropy exactly as
`lossgate.instrument.LossRecorder` does and exports the same `model_prediction_loss_*` series, from
state kept in SQLite (WAL) or Redis so that nothing is lost or counted twice. See docs/joiner.md.

Imports nothing of the operator (an import-linter contract): it reuses lossgate.instrument only.
"""

from lossgate.joiner.client import JoinerClient, JoinerError

__all__ = ["JoinerClient", "JoinerError"]
