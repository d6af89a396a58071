"""The generated CRD: in sync with the models, structural, CEL rules present, defaults as pydantic's."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lossgate.model import ModelRollout, ModelRolloutSpec, crdgen

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = [ROOT / p for p in crdgen.OUTPUTS]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD_FILES[0].read_text())
    return doc


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for k, v in node.get("properties", {}).items():
        yield from nodes(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        yield from nodes(node["items"], f"{path}[]")


def test_checked_in_crds_match_the_generator() -> None:
    """Fails when the models changed without `make crds` (python -m lossgate.model.crdgen)."""
    assert crdgen.main(["--check"]) == 0
    assert CRD_FILES[0].read_bytes() == CRD_FILES[1].read_bytes()


def test_check_mode_reports_drift_and_write_mode_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rel in crdgen.OUTPUTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    target = tmp_path / crdgen.OUTPUTS[1]
    target.write_text(target.read_text().replace("shortNames", "shortNamez"))
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "helm/lossgate/crds/modelrollout.yaml is out of date: run `make crds`" in capsys.readouterr().err
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / crdgen.OUTPUTS[0]).unlink()
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1


def test_names_subresources_and_printer_columns(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "modelrollouts.lossgate.io"
    assert spec["group"] == "lossgate.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["mro"]
    assert spec["names"]["kind"] == "ModelRollout"
    assert spec["names"]["categories"] == ["lossgate"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    shown = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == ["Phase", "Step", "Weight", "Delta", "Age"]


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in nodes(schema):
        assert "type" in node, path
        for key in ("$ref", "anyOf", "oneOf", "allOf", "not", "nullable", "title", "$defs", "const"):
            assert key not in node, (path, key)
        assert node.get("additionalProperties", True) is not False, path
        if "default" in node:
            assert node["default"] is not None, path
            if node["type"] == "object":
                assert node["default"] == {}, path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path == ".status.kopf", path


def test_cel_costs_are_bounded(schema: dict[str, Any]) -> None:
    """Every string and list under spec has a bound (the API server estimates CEL cost from them)."""
    for path, node in nodes(schema["properties"]["spec"], "spec"):
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, path
        if node["type"] == "array":
            assert "maxItems" in node, path


def rules(schema: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, node in nodes(schema):
        for r in node.get("x-kubernetes-validations", []):
            out.setdefault(path, []).append(r["rule"])
            assert r["message"], (path, r)
    return out


def test_cel_rules_for_what_a_schema_cannot_say(schema: dict[str, Any]) -> None:
    r = rules(schema)
    assert any("has(self.gatewayAPI)" in x and "== 1" in x for x in r[".spec.trafficRouting"])
    assert any("self[self.size() - 1].weight == 100" in x for x in r[".spec.steps"])
    assert any("has(self[0].shadow)" in x for x in r[".spec.steps"])  # the shadow step: first only
    assert "has(self.weight) != has(self.shadow)" in r[".spec.steps[]"]
    assert any("isSorted()" in x for x in r[".spec.steps"])
    assert "self > 0.0" in r[".spec.analysis.loss.margin"]
    for alpha in ("alphaRollback", "alphaPromote", "alphaCatastrophic"):
        assert "self > 0.0 && self < 1.0" in r[f".spec.analysis.loss.{alpha}"]
    assert "self.baseline.version != self.canary.version" in r[".spec"]
    assert any("has(self.margin) != has(self.relativeMargin)" in x for x in r[".spec.analysis.loss"])


def test_messages_name_the_field(crd: dict[str, Any]) -> None:
    text = json.dumps(crd)
    assert "spec.trafficRouting: set exactly one of gatewayAPI, istio or replicas" in text
    assert "spec.canary.version must differ from spec.baseline.version" in text


def test_yaml11_booleans_are_quoted() -> None:
    """Go's YAML parser (kubectl) reads bare y/n/on/off as booleans: the `n` property must be quoted."""
    text = CRD_FILES[0].read_text()
    assert not re.search(r"^\s*(-\s+)?(y|n|Y|N|yes|no|on|off)(:|\s*$)", text, re.M)
    assert "'n':" in text


def apply_defaults(obj: Any, node: dict[str, Any]) -> Any:
    """What the API server does: fill missing properties from `default`, then recurse into them."""
    if isinstance(obj, dict) and "properties" in node:
        for key, prop in node["properties"].items():
            if key not in obj and "default" in prop:
                obj[key] = copy.deepcopy(prop["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], prop)
    if isinstance(obj, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(x, node["items"]) for x in obj]
    return obj


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_server_defaults_equal_pydantic_defaults(path: Path, schema: dict[str, Any]) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "ModelRollout":
            continue
        defaulted = apply_defaults(copy.deepcopy(doc["spec"]), schema["properties"]["spec"])
        assert defaulted == ModelRollout.model_validate(doc).spec.to_wire()


def test_minimal_spec_defaults(schema: dict[str, Any]) -> None:
    raw = {
        "model": "m",
        "baseline": {"version": "a", "service": "a"},
        "canary": {"version": "b", "service": "b"},
        "trafficRouting": {"istio": {"virtualService": "vs"}},
        "steps": [{"weight": 1}, {"weight": 100}],
        "analysis": {"prometheus": {"address": "http://p:1"}, "loss": {"relativeMargin": 0.01}},
    }
    defaulted = apply_defaults(copy.deepcopy(raw), schema["properties"]["spec"])
    assert defaulted == ModelRolloutSpec.model_validate(raw).to_wire()


def test_unions_are_refused_by_the_generator() -> None:
    with pytest.raises(crdgen.SchemaError, match="unions are not allowed"):
        crdgen._inline({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, "x")


def test_docs_cover_every_spec_field(schema: dict[str, Any]) -> None:
    """docs/api.md is the resource reference: a new field without a line there fails this test."""
    doc = (ROOT / "docs" / "api.md").read_text()
    missing = [
        path
        for path, _ in nodes(schema["properties"]["spec"])
        if path and path.rsplit(".", 1)[-1].strip("[]") not in doc
    ]
    assert not missing, missing


def test_baseline_training_run_is_in_the_crd_like_the_canarys(schema: dict[str, Any]) -> None:
    arms = schema["properties"]["spec"]["properties"]
    baseline, canary = (arms[arm]["properties"]["trainingRun"] for arm in ("baseline", "canary"))
    # Same constraints as canary.trainingRun, optional, and described as the validation comparison's run
    assert {k: v for k, v in baseline.items() if k != "description"} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
    }
    assert {k: v for k, v in canary.items() if k != "description"} == {
        k: v for k, v in baseline.items() if k != "description"
    }
    assert "trainingRun" not in arms["baseline"]["required"]
    assert "validation loss" in baseline["description"]
