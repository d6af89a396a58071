"""Every PromQL expression the operator sends, in one place, and the escaping that keeps them safe.

Label values are never pasted into PromQL as they are: `quote()` writes a PromQL string literal in
which backslash, double quote, newline and every other control character are escaped, so a version
string such as `v1"} or vector(1) or {x="` stays one label value and cannot change the query.

User templates use the placeholders {model}, {version}, {namespace}, {run} and {metric}. The first four
are label values: they must sit inside a double-quoted string (`version="{version}"`) and are escaped;
{metric} is a metric name and is checked against the metric-name grammar instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
LABEL_PLACEHOLDERS = frozenset({"model", "version", "namespace", "run"})
PLACEHOLDERS = LABEL_PLACEHOLDERS | {"metric"}
_RE2_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A plain instant-vector selector: an optional metric name and an optional {...} of matchers whose
# values are string literals (which may contain braces once escaped).
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_SELECTOR = re.compile(
    rf"\s*(?:{_METRIC_NAME.pattern})?\s*(?:\{{(?:[^{{}}\"'`]|{_STRING})*\}})?\s*", re.DOTALL
)


class TemplateError(ValueError):
    """A template or value that cannot be turned into safe PromQL (reported as BadQuery)."""


def escape_label_value(value: str) -> str:
    """The body of a PromQL double-quoted string literal whose value is exactly `value`."""
    out = []
    for ch in str(value):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(value: str) -> str:
    return f'"{escape_label_value(value)}"'


def metric_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise TemplateError(f"not a valid metric name: {name!r}")
    return name


def selector(metric: str, matchers: Mapping[str, str]) -> str:
    """`metric{a="...",b="..."}` with every value escaped (equality matchers only)."""
    parts = []
    for label, value in matchers.items():
        if not _LABEL_NAME.fullmatch(label):
            raise TemplateError(f"not a valid label name: {label!r}")
        parts.append(f"{label}={quote(value)}")
    return f"{metric_name(metric)}{{{','.join(parts)}}}"


def selector_any(metric: str, equal: Mapping[str, str], one_of: Mapping[str, Sequence[str]]) -> str:
    """`metric{a="...",b=~"x|y"}`: equality matchers and, per label, a literal alternation (escaped)."""
    parts = [selector(metric, equal)[len(metric) + 1 : -1]] if equal else []
    for label, values in one_of.items():
        if not _LABEL_NAME.fullmatch(label):
            raise TemplateError(f"not a valid label name: {label!r}")
        alternatives = "|".join(_RE2_SPECIAL.sub(r"\\\g<0>", v) for v in sorted(set(values)))
        parts.append(f"{label}=~{quote(alternatives)}")
    return f"{metric_name(metric)}{{{','.join(p for p in parts if p)}}}"


def render(template: str, **values: str) -> str:
    """Fill a user template's placeholders; label values are escaped and must sit inside "..."."""
    for m in _PLACEHOLDER.finditer(template):
        name = m.group(1)
        if name not in PLACEHOLDERS:
            raise TemplateError(
                f"unknown placeholder {{{name}}} in {template!r}; known: {sorted(PLACEHOLDERS)}"
            )
        if name not in values:
            raise TemplateError(f"placeholder {{{name}}} in {template!r} has no value here")
        if name in LABEL_PLACEHOLDERS and not _inside_double_quotes(template, m.start(), m.end()):
            raise TemplateError(
                f"placeholder {{{name}}} in {template!r} must be a whole double-quoted label value, "
                f'e.g. {name}="{{{name}}}"'
            )

    def fill(m: re.Match[str]) -> str:
        name, value = m.group(1), values[m.group(1)]
        if name == "metric":
            return metric_name(value)
        if template[max(m.start() - 2, 0) : m.start()] == '~"':  # a regex matcher: match the value literally
            value = _RE2_SPECIAL.sub(r"\\\g<0>", value)
        return escape_label_value(value)

    return _PLACEHOLDER.sub(fill, template)


def is_plain_selector(template: str) -> bool:
    """True for `name{...}` selectors, whose raw samples can be read with a range selection."""
    neutral = _PLACEHOLDER.sub("x", template)
    return bool(neutral.strip()) and _SELECTOR.fullmatch(neutral) is not None


def _inside_double_quotes(template: str, start: int, end: int) -> bool:
    """The placeholder at [start, end) is exactly the content of a "..." literal."""
    return (
        template[start - 1 : start] == '"'
        and template[end : end + 1] == '"'
        and _opens_string(template, start - 1)
    )


def _opens_string(template: str, pos: int) -> bool:
    """Whether the quote at `pos` opens a double-quoted string (scanning literals from the left)."""
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch in "\"'`":
            if i == pos:
                return ch == '"'
            j = i + 1
            while j < n and template[j] != ch:
                j += 2 if (template[j] == "\\" and ch != "`") else 1
            if pos <= j:
                return False  # pos is inside (or closes) another literal
            i = j + 1
        else:
            i += 1
    return False


# The default templates (metric conventions: docs/metrics.md) ---------------------------------


def loss_selectors(
    metric: str, model: str, version: str, namespace: str | None, namespace_label: str | None, tail_le: str
) -> dict[str, str]:
    """Selectors of the raw cumulative series of one arm: count, sum, sumsq, bucket(le=tail), created."""
    base: dict[str, str] = {"model": model, "version": version}
    if namespace_label and namespace:
        base[namespace_label] = namespace
    return {
        "count": selector(f"{metric}_count", base),
        "sum": selector(f"{metric}_sum", base),
        "sumsq": selector(f"{metric}_squared_sum", base),
        "bucket": selector(f"{metric}_bucket", base | {"le": tail_le}),
        "created": selector(f"{metric}_created", base),
    }


def loss_union_selectors(
    metric: str,
    models: Sequence[str],
    versions: Sequence[str],
    namespace: str | None,
    namespace_label: str | None,
    tail_le: str,
) -> dict[str, str]:
    """loss_selectors for several models and versions at once (the series are split by their labels)."""
    base: dict[str, str] = {namespace_label: namespace} if namespace_label and namespace else {}
    any_of = {"model": list(models), "version": list(versions)}
    return {
        "count": selector_any(f"{metric}_count", base, any_of),
        "sum": selector_any(f"{metric}_sum", base, any_of),
        "sumsq": selector_any(f"{metric}_squared_sum", base, any_of),
        "bucket": selector_any(f"{metric}_bucket", base | {"le": tail_le}, any_of),
        "created": selector_any(f"{metric}_created", base, any_of),
    }


def raw_samples(sel: str, range_ms: int) -> str:
    """Every raw sample of the selected series in (t - range, t] (evaluated as an instant query at t)."""
    return f"{sel}[{int(range_ms)}ms]"


TRAINING_SERIES = {
    "loss": "training_loss",
    "grad_norm": "training_grad_norm",
    "step": "training_step",
    "nonfinite": "training_nonfinite_steps_total",
    "loss_scale": "training_loss_scale",
}


def training_selector(series: str, run: str) -> str:
    return selector(TRAINING_SERIES[series], {"run": run})


def latest_validation_loss(run: str, range_ms: int) -> str:
    """The run's latest validation loss in the window, averaged over ranks that report one."""
    return f"avg(last_over_time({selector('validation_loss', {'run': run})}[{int(range_ms)}ms]))"
