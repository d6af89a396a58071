"""Turn a pydantic ValidationError into messages a user can act on.

    spec.steps[2].weight: must be at most 100, got 150 (fix: use a canary percent in 1..100)

Each message names the field by its YAML path (camelCase, list indices in brackets), says what is
wrong, and what to do. A validator may put its error on a sub-field by starting its message with
"<relative.path>: " (e.g. "canary.version: must differ ...").
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

_PATH_PREFIX = re.compile(
    r"^([A-Za-z][A-Za-z0-9]*(?:\[\d+\])?(?:\.[A-Za-z][A-Za-z0-9]*(?:\[\d+\])?)*): (.+)$", re.S
)

_HINTS: dict[str, str] = {
    "missing": "add this required field",
    "string_type": "quote the value as a string",
    "int_type": "use a whole number",
    "int_parsing": "use a whole number",
    "int_from_float": "use a whole number",
    "float_type": "use a number",
    "float_parsing": "use a number",
    "bool_type": "use true or false",
    "bool_parsing": "use true or false",
    "model_type": "use a mapping (key: value pairs) here",
    "model_attributes_type": "use a mapping (key: value pairs) here",
    "dict_type": "use a mapping (key: value pairs) here",
    "list_type": "use a list (- item) here",
    "enum": "use one of the listed values (case-sensitive)",
    "literal_error": "use one of the listed values (case-sensitive)",
    "string_pattern_mismatch": "use a Kubernetes name: lowercase letters, digits and '-'",
    "string_too_short": "give a non-empty value",
    "string_too_long": "shorten the value",
    "too_short": "add items",
    "too_long": "remove items",
    "greater_than": "raise the value",
    "greater_than_equal": "raise the value",
    "less_than": "lower the value",
    "less_than_equal": "lower the value",
}

_FIELD_HINTS: dict[str, str] = {
    "weight": "use a canary percent in 1..100",
    "mirrorPercent": "use a percent of requests to mirror in 1..100",
    "steps": "list 2 to 20 steps, weights strictly increasing and ending with {weight: 100}",
    "margin": "use a positive number of nats, e.g. 0.01",
    "relativeMargin": "use a fraction of the baseline's mean loss, e.g. 0.02",
    "alphaRollback": "use a level strictly between 0 and 1, e.g. 0.01",
    "alphaPromote": "use a level strictly between 0 and 1, e.g. 0.05",
    "alphaCatastrophic": "use a level strictly between 0 and 1, e.g. 0.001",
    "address": "use an http:// or https:// URL, e.g. http://prometheus.monitoring:9090",
}


def format_loc(loc: Sequence[int | str], root: str = "spec") -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def validation_messages(
    err: ValidationError,
    *,
    root: str = "spec",
    model: type[BaseModel] | None = None,
    obj: str | None = None,
) -> list[str]:
    """One line per error: "<path>: <what> (fix: <what to do>)".

    root: the YAML path of the validated object ("spec" when validating a ModelRolloutSpec).
    model: the validated class, to suggest the nearest field name for a misspelt key.
    obj: e.g. "ModelRollout ml-prod/fraud-scorer", prefixed to every line when given.
    """
    lines: list[str] = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if isinstance(p, int | str)]
        msg = str(e["msg"])
        etype = str(e["type"])
        own_hint = ""
        if etype == "value_error":
            msg = msg.removeprefix("Value error, ")
            m = _PATH_PREFIX.match(msg)
            if m:
                loc = [*loc, *_split_path(m.group(1))]
                msg = m.group(2)
            msg, _, own_hint = msg.partition("; fix: ")
        elif etype == "assertion_error":
            msg = msg.removeprefix("Assertion failed, ")
        path = format_loc(loc, root)
        hint = own_hint or _hint(etype, loc, e.get("input"), model)
        if etype not in ("missing", "extra_forbidden", "value_error"):
            msg = f"{msg}, got {_short(e.get('input'))}"
        line = f"{path}: {msg}" + (f" (fix: {hint})" if hint else "")
        lines.append(f"{obj}: {line}" if obj else line)
    return lines


def _split_path(path: str) -> list[int | str]:
    out: list[int | str] = []
    for part in path.split("."):
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?", part)
        if m is None:  # pragma: no cover - the regex above only admits this shape
            out.append(part)
            continue
        out.append(m.group(1))
        if m.group(2) is not None:
            out.append(int(m.group(2)))
    return out


def _hint(etype: str, loc: Sequence[int | str], value: Any, model: type[BaseModel] | None) -> str:
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if etype == "extra_forbidden":
        names = _field_names(model, loc[:-1]) if model is not None else []
        close = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
        if close:
            return f"remove it, or did you mean {close[0]}?"
        if names:
            return f"remove it; allowed here: {', '.join(sorted(names))}"
        return "remove it (field names are camelCase, e.g. minSamples)"
    if etype in ("missing",):
        return _HINTS["missing"]
    if field in _FIELD_HINTS and etype not in ("string_type", "int_type", "float_type", "model_type"):
        return _FIELD_HINTS[field]
    if field in ("interval", "timeout", "after") or field.endswith("Duration"):
        return "use a duration string such as 30s, 5m or 1h30m (at least 1s for intervals and timeouts)"
    return _HINTS.get(etype, "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unwrap_model(tp: Any) -> type[BaseModel] | None:
    """The BaseModel class inside Optional[...] / list[...] / Annotated[...], if any."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    origin = get_origin(tp)
    if origin in (Union, types.UnionType, list) or origin is not None:
        for arg in get_args(tp):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _field_names(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    cur = model
    for part in loc:
        if cur is None:
            return []
        if isinstance(part, int):
            continue
        match = next(
            (f for name, f in cur.model_fields.items() if part in (name, f.alias)),
            None,
        )
        cur = _unwrap_model(match.annotation) if match is not None else None
    if cur is None:
        return []
    return [f.alias or name for name, f in cur.model_fields.items()]
