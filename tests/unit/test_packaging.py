"""The wheel ships the operator, the CLI and lossgate.instrument, and nothing of the development tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    # Offline: the venv's setuptools (locked in requirements/ci.txt) builds it, no index, no isolation.
    got = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    (path,) = out.glob("lossgate-*.whl")
    return path, got.stdout + got.stderr


def test_the_wheel_holds_only_the_shipped_package(wheel: tuple[Path, str]) -> None:
    # Given the wheel built from this checkout
    names = zipfile.ZipFile(wheel[0]).namelist()
    modules = [n for n in names if n.endswith(".py")]
    # Then every module is under lossgate/, none is a development tool
    assert modules
    assert all(n.startswith("lossgate/") for n in modules), [
        n for n in modules if not n.startswith("lossgate/")
    ]
    assert not [n for n in names if "lossgate_dev" in n or "/demo/" in n or "/devenv/" in n]
    # And the operator, the CLI and the instrumentation helpers are all there
    top = {n.split("/")[1] for n in modules if n.count("/") >= 2}
    assert {"adapters", "cli", "core", "instrument", "model", "reconcile"} <= top
    assert "lossgate/entry.py" in names
    assert "lossgate/conventions.py" in names


def test_the_wheel_metadata_and_entry_points(wheel: tuple[Path, str]) -> None:
    z = zipfile.ZipFile(wheel[0])
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    entry = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = z.read(meta).decode()
    # The license is an SPDX expression (PEP 639): no setuptools deprecation about project.license
    assert "License-Expression: Apache-2.0" in text
    assert "project.license" not in wheel[1]
    # The console scripts go through lossgate.entry (the CLI itself never imports the reconciler)
    points = z.read(entry).decode()
    assert "lossgate = lossgate.entry:main" in points
    assert "kubectl-lossgate = lossgate.entry:main" in points
    # And no requirement or extra pulls in the demo's dependencies
    requires = [line for line in text.splitlines() if line.startswith(("Requires-Dist:", "Provides-Extra:"))]
    assert requires
    assert not [line for line in requires if "scikit-learn" in line or "demo" in line]
