#!/usr/bin/env bash
# Everything the node tier needs besides cluster-bins, cached: Traefik and Prometheus (Go builds,
# CPU-bound) and the images (mmdebstrap and pip downloads, mostly I/O-bound), the two halves side
# by side so that a cold machine waits for the longer one only. Each half prints its own progress,
# prefixed; a failure in either fails the whole.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VENV="${VENV:-.venv}"
start=$(date +%s)
( VENV="$VENV" bash "$here/images.sh" 2>&1 | sed -u 's/^/[images] /' ) &
images=$!
bash "$here/traefik.sh" 2>&1 | sed -u 's/^/[traefik] /'
bash "$here/prometheus.sh" 2>&1 | sed -u 's/^/[prometheus] /'
if ! wait "$images"; then
  echo "node-bins: the image build failed (see the [images] lines above)" >&2
  exit 1
fi
echo "node-bins ready in $(( $(date +%s) - start ))s"
