#!/usr/bin/env bash
# Builds the local node's images (pause, the operator, the demo model server) with mmdebstrap and
# buildah, as OCI archives cached under ${LOSSGATE_CACHE:-~/.cache/lossgate}/images; a second run
# with unchanged inputs does nothing. Pass --load SOCKET to import them into a running containerd.
# Needs root, buildah, mmdebstrap and gcc (docs/local-node.md#images).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${VENV:-$root/.venv}/bin/python"
exec "$py" -m lossgate_dev.devenv.images "$@"
