"""The node's images, built with buildah on the Debian base (lossgate_dev.devenv.images; the cached
archives when the inputs did not change): their cache key and their config. The node tier
(test_node_rollouts.py) imports them into the node's containerd and runs them as pods: read-only
root, the image's own numeric user."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lossgate_dev.devenv import images


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return images.ensure_images(progress=print)


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
    # (running it, read-only and as that user, is the node tier's test_node_rollouts.py)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["lossgate"]
    assert config["Cmd"][0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in config["Cmd"]
    # And the archives are cached under their inputs' hash
    for image, path in archives.items():
        assert path.parent == images.images_dir()
        assert path.name.startswith(images.archive_name(image, "")[: -len(".oci.tar")])
