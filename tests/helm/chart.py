"""Render and lint helm/lossgate with a real Helm engine (helm-python-sdk bundles Helm v4's library)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_python.chart import Chart, lint

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lossgate"

Manifest = dict[str, Any]


def render(
    values: dict[str, Any] | None = None, *, release: str = "lossgate", namespace: str = "lossgate-system"
) -> list[Manifest]:
    """Every object the chart renders (NOTES.txt and empty templates left out), in template order."""
    with Chart.load(CHART) as chart:
        out = chart.render(values=values or {}, name=release, namespace=namespace, is_install=True)
    docs: list[Manifest] = []
    for path in sorted(out):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(out[path]) if d]
    return docs


def lint_report(values: dict[str, Any] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = lint(CHART, values or None, strict=True, namespace="lossgate-system")
    return report


def validate(values: dict[str, Any]) -> None:
    """Raises helm_python's HelmValuesError when values.schema.json refuses the values."""
    with Chart.load(CHART) as chart:
        chart.validate_schema(values)


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    (doc,) = by_kind(docs, kind)
    return doc
