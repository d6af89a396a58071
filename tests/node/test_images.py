"""The node's images, built with buildah on the Debian base (lossgate_dev.devenv.images; the cached
archives when the inputs did not change), imported with `ctr images import` into a throwaway containerd
and run under runc as the kubelet would: read-only root, the image's own numeric user."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lossgate_dev.devenv import images
from lossgate_dev.devenv.procs import Server, wait_until


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return images.ensure_images(progress=print)


def _shims_of(sock: Path) -> list[int]:
    """containerd-shim processes that our containerd started (their argv names its socket)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and str(sock).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted((p for p in points if p == str(root) or p.startswith(f"{root}/")), reverse=True)


# No CRI plugin (no kubelet here); every path in the temp dir, none shared with the node's containerd.
CONFIG = """version = 2
root = "{tmp}/root"
state = "{tmp}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{tmp}/opt"
"""


@pytest.fixture(scope="module")
def containerd() -> Iterator[Path]:
    """containerd with its own root, state and socket in a temp dir (no CRI plugin): stopped, its shims
    killed and its mounts removed at the end. The dir is a tmpfs of its own: the unpacked images (a few
    hundred MB of small files) are written and dropped at memory speed, not through the shared disk."""
    tmp = Path(tempfile.mkdtemp(prefix="lg-ctrd-"))
    sock = tmp / "containerd.sock"
    server: Server | None = None
    try:
        tmpfs = ["mount", "-t", "tmpfs", "-o", "size=3g,mode=0700", "tmpfs", str(tmp)]
        subprocess.run(tmpfs, check=True, timeout=30)
        cfg = tmp / "config.toml"
        cfg.write_text(CONFIG.format(tmp=tmp, sock=sock))
        server = Server("containerd", ["containerd", "--config", str(cfg)], tmp / "containerd.log")
        wait_until(lambda: _ctr(sock, "version").returncode == 0, 60, "containerd's socket", server)
        yield sock
    finally:
        if server is not None:
            server.stop()
        for pid in _shims_of(sock):
            os.kill(pid, signal.SIGKILL)
        for point in _mounts_under(tmp):  # the snapshots left mounted, if any, then the tmpfs
            subprocess.run(["umount", "-l", point], check=False, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def _ctr(sock: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = ["ctr", "-a", str(sock), "-n", "k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _run(sock: Path, image: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Runs `argv` in the image under runc: read-only root, the image's user, then removed."""
    return _ctr(sock, "run", "--rm", "--read-only", image, f"t-{uuid.uuid4().hex[:8]}", *argv, timeout=120)


def _config(archive: Path) -> dict[str, Any]:
    """The image config inside an OCI archive: index.json -> manifest -> config blob."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            fh = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert fh is not None
            doc: dict[str, Any] = json.load(fh)
            return doc

        index = tar.extractfile("index.json")
        assert index is not None
        (manifest,) = json.load(index)["manifests"]
        return blob(blob(manifest["digest"])["config"]["digest"])


def test_inputs_key_follows_contents_not_caches(tmp_path: Path) -> None:
    # Given a small source tree
    pkg = tmp_path / "operator" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    key = images.inputs_key([tmp_path / "operator"], root=tmp_path)
    # When bytecode and a cache dir appear, or a file is rewritten with the same bytes
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "b.pyc").write_bytes(b"\0")
    (pkg / "a.py").write_text("x = 1\n")
    # Then the key (and so the cached archive) stays
    assert images.inputs_key([tmp_path / "operator"], root=tmp_path) == key
    # And a changed byte, a new source file or another base recipe gives a new key
    (pkg / "a.py").write_text("x = 2\n")
    changed = images.inputs_key([tmp_path / "operator"], root=tmp_path)
    (pkg / "c.py").write_text("")
    added = images.inputs_key([tmp_path / "operator"], root=tmp_path)
    other_base = images.inputs_key([tmp_path / "operator"], "another base", root=tmp_path)
    assert len({key, changed, added, other_base}) == 4


def test_operator_image_config_is_what_the_chart_expects(archives: dict[str, Path]) -> None:
    # Given the operator image as containerd receives it
    config = _config(archives[images.OPERATOR])["config"]
    # Then it runs as the numeric non-root user (runAsNonRoot can check it) with `lossgate operator`
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["lossgate", "operator"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in config["Cmd"]
    # And the archives are cached under their inputs' hash
    for image, path in archives.items():
        assert path.parent == images.images_dir()
        assert path.name.startswith(images.archive_name(image, "")[: -len(".oci.tar")])


def test_operator_image_runs_read_only_as_its_user_under_runc(
    archives: dict[str, Path], containerd: Path
) -> None:
    # Given the images imported into containerd's CRI namespace, as the node does
    images.load_images(containerd, {k: archives[k] for k in (images.PAUSE, images.OPERATOR)})
    listed = _ctr(containerd, "images", "ls", "-q").stdout.split()
    assert {images.PAUSE, images.OPERATOR} <= set(listed)
    # When the operator image runs with a read-only root filesystem
    script = "id -u; id -g; touch /tmp/x; lossgate operator --help"
    got = _run(containerd, images.OPERATOR, "sh", "-c", script)
    # Then it runs as 10001:10001, cannot write its root filesystem, and the CLI prints its usage
    assert got.returncode == 0, got.stdout + got.stderr
    uid, gid, *rest = got.stdout.splitlines()
    assert (uid, gid) == ("10001", "10001")
    assert "Read-only file system" in got.stdout + got.stderr
    assert "usage: lossgate operator" in "\n".join(rest)
    # And pip is gone from it, as the Dockerfile says
    nopip = _run(containerd, images.OPERATOR, "python", "-c", "import pip")
    assert nopip.returncode != 0
    assert "No module named 'pip'" in nopip.stdout + nopip.stderr


def test_demo_image_serves_the_demo_models(archives: dict[str, Path], containerd: Path) -> None:
    # Given the demo image in containerd
    images.load_images(containerd, [archives[images.DEMO]])
    assert images.DEMO in _ctr(containerd, "images", "ls", "-q").stdout.split()
    # When its entrypoint's module is imported under runc, read-only, as the image's user
    code = "import os, lossgate_dev.demo.server; print(os.getuid())"
    got = _run(containerd, images.DEMO, "python", "-c", code)
    # Then the demo server and scikit-learn are there
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.split() == ["10001"]
