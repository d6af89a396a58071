"""`lossgate get` against the real API server: the detail view, the list, -o json|yaml, --watch."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from lossgate.cli.get import run_get
from lossgate.cli.kubeconn import Rollouts
from lossgate_dev.devenv.procs import wait_until
from tests.cli.conftest import Create, progressing, rolled_back, run
from tests.infra.kube_fixtures import Kube

pytestmark = pytest.mark.kube


def test_detail_view_shows_the_numbers(kube: Kube, namespace: str, create: Create) -> None:
    # Given a rollout at step 2/4 with an Undecided analysis, written by decide()
    create("fraud-scorer", progressing)
    # When `lossgate get NAME` runs with the kubeconfig flag
    r = run("get", "fraud-scorer", "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
    # Then it shows phase, step, weights, n per arm, delta with its CS, p-values, samples needed
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    field = {line.split()[0]: " ".join(line.split()[1:]) for line in lines if line[:1].isupper()}
    assert field["Phase"] == "Progressing"
    assert field["Step"] == "2/4 (weights 5 25 50 100)"
    assert field["Weights"] == "baseline 75% canary 25%"
    assert field["Verdict"] == "Undecided"
    assert field["Samples"] == (
        "baseline 40,000 (mean loss 0.4090) canary 6,120 (mean loss 0.4120) 6,120 canary in this step"
    )
    assert field["Delta"] == "+0.0030 nats (canary - baseline), CS 95% [-0.0040, +0.0100], margin 0.0200"
    assert field["P-values"] == "regression 0.62 not worse 0.21 (always valid)"
    assert field["Needed"] == "1,880 more canary samples (judge's estimate)"
    assert field["Training"].startswith("Pass non-finite steps 0, grad-norm spikes 0")
    # And the conditions and the last decisions (newest first: the advance to step 2, then the start)
    assert "MetricsAvailable" in r.out
    assert "Progressing" in r.out
    decisions = [line.split()[1] for line in lines if line[:2].isdigit() and ":" in line[:8]]
    assert decisions[:2] == ["Advance", "Start"], r.out


def test_list_all_namespaces_and_machine_output(kube: Kube, namespace: str, create: Create) -> None:
    # Given two rollouts: one progressing, one rolled back
    create("a-progressing", progressing)
    create("b-rolled-back", rolled_back)
    cfg = str(kube.kubeconfig)
    # When listed across namespaces
    r = run("get", "-A", "--kubeconfig", cfg)
    # Then each is one row with its phase, step, weight, samples and delta
    assert r.rc == 0, r.err
    rows = {line.split()[1]: line.split() for line in r.out.splitlines() if line.startswith(namespace)}
    assert rows["a-progressing"][2:7] == ["Progressing", "2/4", "25%", "40,000/6,120", "+0.0030"]
    assert rows["b-rolled-back"][2:7] == ["RolledBack", "1/4", "0%", "40,000/2,400", "+0.0700"]
    # And -o json / -o yaml give the stored objects for scripts
    doc = run("get", "-n", namespace, "-o", "json", "--kubeconfig", cfg).json()
    assert [o["status"]["phase"] for o in doc["items"]] == ["Progressing", "RolledBack"]
    one = yaml.safe_load(run("get", "b-rolled-back", "-n", namespace, "-o", "yaml", "--kubeconfig", cfg).out)
    assert one["status"]["analysis"]["verdict"] == "Regression"
    assert one["status"]["conditions"][0]["type"]


def test_missing_rollout_is_a_clear_error(kube: Kube, namespace: str, cli_crd: None) -> None:
    # When a rollout that does not exist is asked for
    r = run("get", "nope", "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
    # Then the exit code is 1 and the message names it
    assert r.rc == 1
    assert f"ModelRollout {namespace}/nope not found" in r.err


def test_watch_redraws_when_the_status_changes(kube: Kube, namespace: str, create: Create) -> None:
    # Given a progressing rollout and `get --watch` running (bounded to 2 frames / 60 s)
    create("fraud-scorer", progressing)
    out = io.StringIO()
    rollouts = Rollouts(kube.api_client)
    rc: list[int] = []

    def watch() -> None:
        rc.append(run_get(rollouts, namespace, "fraud-scorer", "json", out, True, 60.0, max_frames=2))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_until(lambda: '"Progressing"' in out.getvalue(), 30, "the first frame")
    # When the operator (here: the test) writes a new status
    patch: dict[str, Any] = {
        "status": {"phase": "Paused", "manuallyPaused": True, "message": "paused by test"}
    }
    client.CustomObjectsApi(kube.api_client).patch_namespaced_custom_object_status(
        "lossgate.io", "v1alpha1", namespace, "modelrollouts", "fraud-scorer", patch
    )
    t.join(60)
    # Then a second frame is drawn with the new phase, and the watch ends after it
    assert not t.is_alive()
    assert rc == [0]
    frames = [json.loads(f) for f in out.getvalue().replace("}\n{", "}\n\x00{").split("\x00")]
    assert [f["status"]["phase"] for f in frames] == ["Progressing", "Paused"]
    assert frames[1]["status"]["message"] == "paused by test"


def test_context_flag_picks_the_contexts_namespace(
    kube: Kube, namespace: str, create: Create, tmp_path: Path
) -> None:
    # Given a kubeconfig with a second context whose default namespace is the test's
    create("fraud-scorer", progressing)
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    ctx = dict(cfg["contexts"][0])
    ctx = {"name": "cli-test", "context": dict(ctx["context"]) | {"namespace": namespace}}
    cfg["contexts"].append(ctx)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    # When get runs with --context and no -n
    with_ctx = run("get", "--kubeconfig", str(path), "--context", "cli-test", "-o", "json")
    without = run("get", "--kubeconfig", str(path), "-o", "json")
    # Then that context's namespace is used; without it, the current context's ("default")
    assert [o["metadata"]["name"] for o in with_ctx.json()["items"]] == ["fraud-scorer"]
    assert {o["metadata"]["namespace"] for o in without.json()["items"]} <= {"default"}
    # And an unknown context is a clear error
    bad = run("get", "--kubeconfig", str(path), "--context", "nope")
    assert bad.rc == 1
    assert bad.err.startswith(f"error: kubeconfig {path}: ")
