"""The local node's images, built where no registry is reachable and no Docker engine runs.

A Python base rootfs is made from Debian packages (mmdebstrap) and stands in for Docker Hub's
`python:3.11-slim-bookworm`; buildah builds the real Dockerfile and devtools/Dockerfile.demo on it
(`--build-arg BASE=...`) and writes each image as an OCI archive that `ctr images import` loads into
containerd. Each archive is named by a hash of its inputs, so a build runs only when an input changed,
and buildah's layer cache keeps the dependency layers across code changes (docs/local-node.md#images).

    python -m lossgate_dev.devenv.images [--load CONTAINERD_SOCKET]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from lossgate_dev.devenv.binaries import cache_root

ROOT = Path(__file__).resolve().parents[3]
PAUSE = "lossgate.local/pause:1"
OPERATOR = "lossgate.local/lossgate:dev"
DEMO = "lossgate.local/lossgate-demo:dev"
BASE = "lossgate.local/python-base:3.11"
MIRROR = os.environ.get("LOSSGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The host's CA bundle, bind-mounted into RUN steps: pip in the build must trust what the host trusts
# (a proxy that re-signs TLS, in this sandbox). Nothing of it is committed into a layer.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The slim Python, from Debian packages: variant apt (Essential + apt) plus python3 and what the
# Dockerfiles use (groupadd/useradd from passwd). pip is pip-installed from Debian's pip wheel, so the
# Dockerfile's `pip uninstall -y pip` works and the EXTERNALLY-MANAGED marker goes: like the slim
# image, pip installs into the system Python. Docs, man pages and locales are left out.
MMDEBSTRAP = (
    "mmdebstrap",
    "--variant=apt",
    "--include=python3,python3-pip-whl,python3-setuptools-whl,python-is-python3,passwd,ca-certificates",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    # Debian's ensurepip refuses the system Python: run pip from its wheel to install it and setuptools.
    '--customize-hook=chroot "$1" sh -c \'w=/usr/share/python-wheels; p=$(echo $w/pip-*.whl); '
    'python3 "$p/pip" install --no-cache-dir --no-index "$p" $w/setuptools-*.whl\'',
    '--customize-hook=chroot "$1" pip --version',
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
    "--format=tar",
    "bookworm",
)
_STEP = re.compile(r"(\[\d+/\d+\] )?STEP \d+/\d+: ")  # buildah's step lines (multi-stage: [n/m] prefix)
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and ends with the tail of its log."""


def images_dir() -> Path:
    """Where the archives and build logs live: $LOSSGATE_CACHE/images (default ~/.cache/lossgate)."""
    return cache_root() / "images"


def _tree_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(".pyc"):
                yield Path(dirpath) / name


def inputs_key(paths: Iterable[Path], *extra: str, root: Path = ROOT) -> str:
    """A hash of the files' paths (relative to `root`) and contents, directories walked, caches and
    bytecode skipped (mtimes do not count: a touched file with the same bytes keeps its archive)."""
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for top in paths:
        for f in _tree_files(top):
            h.update(str(f.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _base_key() -> str:
    return inputs_key([], *MMDEBSTRAP, ENV_PATH)


def _image_inputs() -> dict[str, list[Path]]:
    common = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "requirements/image.txt", ROOT / "operator"]
    return {
        PAUSE: [ROOT / "hack/node/pause.c"],
        OPERATOR: [ROOT / "Dockerfile", ROOT / ".dockerignore", *common],
        DEMO: [ROOT / "requirements/ci.txt", ROOT / "devtools", *common],
    }


def archive_name(image: str, key: str) -> str:
    """lossgate.local/lossgate:dev + key -> lossgate-dev-<key>.oci.tar"""
    repo, _, tag = image.rpartition(":")
    return f"{repo.rsplit('/', 1)[-1]}-{tag}-{key}.oci.tar"


def _run(argv: Sequence[str], log: Path, step: str, progress: Progress, *, echo_steps: bool = False) -> None:
    """Run one build command, its output appended to `log`; buildah's STEP lines go to `progress`."""
    start = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout or ():
            fh.write(line)
            if echo_steps and _STEP.match(line):
                progress(f"    {line.rstrip()[:150]}")
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise ImageBuildError(f"{step} failed (exit {rc}); full log: {log}\n{tail}")
    progress(f"    {step}: done in {time.monotonic() - start:.0f}s")


def _buildah(*args: str) -> str:
    got = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=120, check=False)
    if got.returncode != 0:
        err = got.stderr.strip()
        raise ImageBuildError(f"buildah {' '.join(args)} failed (exit {got.returncode}): {err}")
    return got.stdout.strip()


def _buildah_has(image: str) -> bool:
    got = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, timeout=60)
    return got.returncode == 0


def _push(image: str, dest: Path, log: Path, progress: Progress) -> None:
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    argv = ["buildah", "push", "--quiet", image, f"oci-archive:{tmp}:{image}"]
    _run(argv, log, f"export {image}", progress)
    tmp.rename(dest)  # atomic: an archive under its final name is always complete


def ensure_base(progress: Progress = print) -> str:
    """The Python base image in buildah's storage (built if missing); returns its name."""
    key = _base_key()
    keyed = f"{BASE.rpartition(':')[0]}:{key}"
    if _buildah_has(keyed):
        if not _buildah_has(BASE):
            _buildah("tag", keyed, BASE)
        return BASE
    cache = images_dir()
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    rootfs = cache / f"python-base-rootfs-{key}.tar"
    log = cache / "logs" / f"python-base-{key}.log"
    if not rootfs.exists():
        progress(f"==> base rootfs: mmdebstrap bookworm + python3 from {MIRROR} (cold: ~3 min)")
        part = rootfs.with_name(rootfs.name + ".part")
        _run([*MMDEBSTRAP, str(part), MIRROR], log, "mmdebstrap", progress)
        part.rename(rootfs)
    progress(f"==> base image {BASE} from {rootfs.name}")
    name = _buildah("from", "scratch")
    try:
        _run(["buildah", "add", "--quiet", name, str(rootfs), "/"], log, "unpack rootfs", progress)
        _buildah("config", "--env", ENV_PATH, "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', name)
        _run(["buildah", "commit", "--quiet", name, keyed], log, "commit base", progress)
        _buildah("tag", keyed, BASE)
    finally:
        _buildah("rm", name)
    return BASE


def _build_pause(dest: Path, log: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="lossgate-pause-") as tmp:
        exe = Path(tmp) / "pause"
        _run(["gcc", "-static", "-O2", "-o", str(exe), str(ROOT / "hack/node/pause.c")], log, "gcc", progress)
        name = _buildah("from", "scratch")
        try:
            _run(["buildah", "copy", "--quiet", name, str(exe), "/pause"], log, "copy pause", progress)
            _buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", name)
            _run(["buildah", "commit", "--quiet", name, PAUSE], log, "commit pause", progress)
        finally:
            _buildah("rm", name)
    _push(PAUSE, dest, log, progress)


def bud_argv(image: str, dockerfile: Path, ignorefile: Path) -> list[str]:
    """buildah's build of a Dockerfile on the local base: layers cached, host network for pip, and the
    host's CA bundle mounted for RUN steps."""
    return [
        "buildah", "bud", "--layers", "--network", "host",
        "--build-arg", f"BASE={BASE}",
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--ignorefile", str(ignorefile),
        "--file", str(dockerfile), "--tag", image, str(ROOT),
    ]  # fmt: skip


def _build_dockerfile(image: str, dest: Path, log: Path, progress: Progress) -> None:
    ensure_base(progress)
    dockerfile, ignorefile = {
        OPERATOR: (ROOT / "Dockerfile", ROOT / ".dockerignore"),
        DEMO: (ROOT / "devtools/Dockerfile.demo", ROOT / "devtools/Dockerfile.demo.dockerignore"),
    }[image]
    progress(f"==> buildah bud {image} ({dockerfile.relative_to(ROOT)}; cold: minutes, warm: seconds)")
    _run(bud_argv(image, dockerfile, ignorefile), log, f"build {image}", progress, echo_steps=True)
    _push(image, dest, log, progress)


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    # One build at a time per cache: a test and `make node-images` may ask at once.
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_images(progress: Progress = print) -> dict[str, Path]:
    """The pause, operator and demo images as OCI archives, built only if their inputs changed.

    Returns {image name: archive path}; the archives live in images_dir(). Older archives of the same
    image are removed once a new one is written."""
    missing = [t for t in ("buildah", "mmdebstrap", "gcc") if shutil.which(t) is None]
    if missing:
        raise ImageBuildError(
            f"missing tools: {', '.join(missing)}; install the Debian packages (apt-get install buildah "
            "mmdebstrap gcc libc6-dev) and run as root (docs/local-node.md#images)"
        )
    cache = images_dir()
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with _locked(cache):
        for image, paths in _image_inputs().items():
            key = inputs_key(paths) if image == PAUSE else inputs_key(paths, _base_key())
            dest = cache / archive_name(image, key)
            if not dest.exists():
                start = time.monotonic()
                log = cache / "logs" / dest.name.replace(".oci.tar", ".log")
                log.unlink(missing_ok=True)
                if image == PAUSE:
                    progress(f"==> {image}: static pause (gcc -static)")
                    _build_pause(dest, log, progress)
                else:
                    _build_dockerfile(image, dest, log, progress)
                progress(f"==> {image}: built in {time.monotonic() - start:.0f}s -> {dest}")
                prefix = dest.name[: -len(f"{key}.oci.tar")]
                for old in [*cache.glob(f"{prefix}*.oci.tar"), *(cache / "logs").glob(f"{prefix}*.log")]:
                    if old not in (dest, log):
                        old.unlink()
            out[image] = dest
    return out


def load_images(ctr_socket: Path, archives: Mapping[str, Path] | Iterable[Path]) -> None:
    """Import the archives into containerd's CRI namespace (k8s.io), where the kubelet finds them."""
    paths = list(archives.values()) if isinstance(archives, Mapping) else list(archives)
    for path in paths:
        got = subprocess.run(
            ["ctr", "-a", str(ctr_socket), "-n", "k8s.io", "images", "import", str(path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if got.returncode != 0:
            raise ImageBuildError(
                f"ctr images import {path} into {ctr_socket} failed (exit {got.returncode}): "
                f"{got.stderr.strip() or got.stdout.strip()}; is containerd running on that socket?"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossgate_dev.devenv.images", description=__doc__)
    parser.add_argument("--load", type=Path, metavar="SOCKET", help="then import them into this containerd")
    args = parser.parse_args(argv)
    try:
        archives = ensure_images()
        if args.load:
            load_images(args.load, archives)
    except ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for image, path in archives.items():
        print(f"{image}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
