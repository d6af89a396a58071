"""`lossgate promote|abort|retry|pause|resume` against the real API server: the annotation is set when
the phase allows the command, and refused (exit 1, nothing written) when the operator would ignore it.
Also: the `kubectl-lossgate` entry point resolves, so `kubectl lossgate ...` works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from lossgate import __version__
from lossgate.entry import main as entry_main
from tests.cli.conftest import Create, progressing, rolled_back, run
from tests.infra.kube_fixtures import Kube

pytestmark = pytest.mark.kube


def annotations(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    doc = run("get", name, "-n", namespace, "-o", "json", "--kubeconfig", str(kube.kubeconfig)).json()
    return {
        k: v for k, v in (doc["metadata"].get("annotations") or {}).items() if k.startswith("lossgate.io/")
    }


@pytest.mark.parametrize("command", ["promote", "abort", "pause"])
def test_allowed_command_sets_its_annotation(
    kube: Kube, namespace: str, create: Create, command: str
) -> None:
    # Given a progressing rollout
    create("fraud-scorer", progressing)
    # When the command is given
    r = run(command, "fraud-scorer", "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
    # Then it exits 0, says what it did, and the annotation is on the stored object (value: a timestamp)
    assert r.rc == 0, r.err
    assert f"{command} requested on ModelRollout {namespace}/fraud-scorer (phase Progressing)" in r.out
    (key,) = annotations(kube, namespace, "fraud-scorer")
    assert key == f"lossgate.io/{command}"


@pytest.mark.parametrize(
    ("status", "command", "why"),
    [
        (
            rolled_back,
            "promote",
            "the rollout is RolledBack: promote needs a live rollout; use `lossgate retry`",
        ),
        (rolled_back, "abort", "nothing to abort: the canary already has 0% of the traffic"),
        (progressing, "retry", "retry restarts a RolledBack or Failed rollout; this one is Progressing"),
        (progressing, "resume", "the rollout is not paused (phase Progressing)"),
    ],
)
def test_command_the_phase_does_not_allow_is_refused(
    kube: Kube, namespace: str, create: Create, status: object, command: str, why: str
) -> None:
    # Given a rollout in a phase where the command would be ignored by the operator
    create("fraud-scorer", status)
    # When the command is given
    r = run(command, "fraud-scorer", "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
    # Then it is refused with the reason and exit code 1, and no annotation is written
    assert r.rc == 1
    assert r.out.startswith(f"refused: {command} ModelRollout {namespace}/fraud-scorer: ")
    assert why in r.out
    assert annotations(kube, namespace, "fraud-scorer") == {}


def test_retry_after_rollback_and_resume_after_pause(kube: Kube, namespace: str, create: Create) -> None:
    # Given a rolled-back rollout and a paused one (paused by the annotation, as the operator records it)
    create("rolled", rolled_back)
    create("paused", lambda spec: progressing(spec).model_copy(update={"manually_paused": True}))
    cfg = str(kube.kubeconfig)
    # When retry and resume are given
    assert run("retry", "rolled", "-n", namespace, "--kubeconfig", cfg).rc == 0
    assert run("resume", "paused", "-n", namespace, "--kubeconfig", cfg).rc == 0
    # Then each annotation is set; a second pause on the paused one is refused
    assert list(annotations(kube, namespace, "rolled")) == ["lossgate.io/retry"]
    assert list(annotations(kube, namespace, "paused")) == ["lossgate.io/resume"]
    again = run("pause", "paused", "-n", namespace, "--kubeconfig", cfg)
    assert again.rc == 1
    assert "already paused (by lossgate.io/pause)" in again.out


def test_missing_rollout_is_refused(kube: Kube, namespace: str, cli_crd: None) -> None:
    r = run("abort", "nope", "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
    assert r.rc == 1
    assert f"ModelRollout {namespace}/nope not found" in r.err


def test_kubectl_plugin_entry_point_resolves(kube: Kube) -> None:
    # Given the installed console scripts
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "kubectl-lossgate"]
    # Then kubectl-lossgate is the same main() as lossgate (lossgate.entry, which adds `operator`)
    assert ep.load() is entry_main
    # And kubectl finds it on PATH as a plugin: `kubectl lossgate version`
    bindir = Path(sys.executable).parent
    assert (bindir / "kubectl-lossgate").exists()
    kubectl = str(kube.plane.bin_dir / "kubectl")
    env = os.environ | {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [kubectl, "lossgate", "version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __version__
    assert shutil.which("kubectl-lossgate", path=env["PATH"]) == str(bindir / "kubectl-lossgate")
