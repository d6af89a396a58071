"""CloudEvents in binary HTTP mode: KServe inference-logger events and label events.

KServe's logger posts two events per inference with the same `ce-id`: the request
(`org.kubeflow.serving.inference.request`, acknowledged and ignored: it has no scores) and the
response (`...response`), whose body is the v1 `{"predictions": [...]}` or the v2 / Open Inference
Protocol `{"outputs": [...]}` payload. Extension attributes arrive as `ce-<name>` headers
(`ce-inferenceservicename`, `ce-namespace`, `ce-component`, `ce-endpoint`: default or canary).

What the payload cannot say is given on the logger's URL: `?version=` (otherwise `ce-modelversion`,
then v2's `model_version`, then `ce-endpoint`), `?kind=probabilities|logits`, `?output=<v2 output
name>`, `?class=`, `?model=` (otherwise the InferenceService name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossgate.joiner import parse
from lossgate.joiner.records import FieldError, Label, Prediction

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
LABEL = "io.lossgate.label"
REQUIRED = ("ce-specversion", "ce-id", "ce-type", "ce-source")


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]


def event(headers: Mapping[str, str], query: Mapping[str, str]) -> Event:
    h = {k.lower(): v for k, v in headers.items()}
    for name in REQUIRED:
        if not h.get(name):
            raise FieldError(f"header {name}", "missing: send a binary-mode CloudEvent (ce-* headers)")
    if h["ce-specversion"] not in ("1.0", "0.3"):
        raise FieldError("header ce-specversion", f"unsupported CloudEvents version {h['ce-specversion']!r}")
    return Event(parse.text(h["ce-id"], "header ce-id", parse.MAX_ID), h["ce-type"], h, query)


def _pick(ev: Event, doc: Mapping[str, Any]) -> tuple[str, str, str | None]:
    model = ev.query.get("model") or ev.headers.get("ce-inferenceservicename")
    if not model:
        raise FieldError("header ce-inferenceservicename", "missing (or give ?model= on the logger URL)")
    version = (
        ev.query.get("version")
        or ev.headers.get("ce-modelversion")
        or (doc.get("model_version") if isinstance(doc.get("model_version"), str) else None)
        or ev.headers.get("ce-endpoint")
    )
    if not version:
        raise FieldError("version", "unknown: give ?version= on the logger URL or a ce-modelversion header")
    klass = ev.query.get("class")
    return (
        parse.text(model, "model", parse.MAX_NAME),
        parse.text(version, "version", parse.MAX_NAME),
        None if klass is None else parse.text(klass, "class", parse.MAX_NAME),
    )


def _kind(ev: Event, output_name: str = "") -> str:
    kind = ev.query.get("kind") or ("logits" if "logit" in output_name.lower() else "probabilities")
    if kind not in ("probabilities", "logits"):
        raise FieldError("kind", f"must be probabilities or logits, got {kind!r}")
    return kind


def _v2_rows(ev: Event, outputs: Any) -> tuple[list[Any], str]:
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise FieldError("outputs", "must be a non-empty list of tensors")
    wanted = ev.query.get("output")
    if wanted:
        chosen = [o for o in outputs if o.get("name") == wanted]
    elif len(outputs) == 1:
        chosen = outputs
    else:
        chosen = [o for o in outputs if any(w in str(o.get("name", "")).lower() for w in ("prob", "logit"))][
            :1
        ]
    if len(chosen) != 1:
        names = [o.get("name") for o in outputs]
        raise FieldError("outputs", f"cannot tell which output holds the scores among {names}: give ?output=")
    out = chosen[0]
    name = str(out.get("name", ""))
    try:
        data = np.asarray(out.get("data"), dtype=np.float64)
        shape = [int(d) for d in out.get("shape") or [1, data.size]]
        if not shape or any(d < 1 for d in shape) or math.prod(shape) != data.size:
            raise ValueError(f"shape {shape} does not hold {data.size} values")
        rows = data.reshape(shape[0], -1)
    except (TypeError, ValueError) as e:
        raise FieldError(f"outputs[{name}].data", f"not a numeric tensor of its shape ({e})") from None
    return [r.tolist() if r.size > 1 else float(r[0]) for r in rows], name


def predictions(ev: Event, body: bytes, now: float) -> list[Prediction]:
    """The predictions of a response event (one per instance; ids `<ce-id>` or `<ce-id>:<i>`)."""
    doc = parse.loads(body, "data")
    if not isinstance(doc, dict):
        raise FieldError("data", "must be a JSON object with predictions (v1) or outputs (v2)")
    if "predictions" in doc:
        rows, name = doc["predictions"], ""
        if not isinstance(rows, list) or not rows:
            raise FieldError("data.predictions", "must be a non-empty list (one entry per instance)")
    elif "outputs" in doc:
        rows, name = _v2_rows(ev, doc["outputs"])
    else:
        raise FieldError("data", "has neither predictions (v1) nor outputs (v2 / Open Inference Protocol)")
    if len(rows) > parse.MAX_BATCH:
        raise FieldError("data", f"at most {parse.MAX_BATCH} instances per event, got {len(rows)}")
    key = _pick(ev, doc)
    kind = _kind(ev, name)
    served = (
        parse.timestamp(ev.headers["ce-time"], "header ce-time", now) if ev.headers.get("ce-time") else now
    )
    out = []
    for i, row in enumerate(rows):
        pid = ev.id if len(rows) == 1 else f"{ev.id}:{i}"
        out.append(Prediction(pid, key, served, parse.scores({kind: row}, f"data.predictions[{i}]")))
    return out


def label(ev: Event, body: bytes) -> Label:
    """A label event: data `{"id": <prediction id>, "label": <class>}` (or the id in ce-subject)."""
    doc = parse.loads(body, "data")
    if not isinstance(doc, dict):
        raise FieldError("data", 'must be {"id": ..., "label": ...}')
    pid = doc.get("id", ev.headers.get("ce-subject"))
    return Label(
        parse.text(pid, "data.id", parse.MAX_ID), parse.label_value(doc.get("label"), "data.label"), "data"
    )
