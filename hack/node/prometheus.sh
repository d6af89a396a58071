#!/usr/bin/env bash
# Builds Prometheus from its Go module for the node tier, cached by version:
# ${LOSSGATE_CACHE:-~/.cache/lossgate}/prometheus/<module version>/prometheus. Skips when present.
# Debian's prometheus package has Kubernetes service discovery removed (kubernetes_sd_configs is
# "field not found" there), and the node tier's Prometheus discovers pods through the API server as
# in a cluster. The build tags keep only the file, HTTP and Kubernetes discovery (Prometheus' own
# remove_all_sd / enable_kubernetes_sd tags), which also keeps the cold build short.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VERSION="${PROMETHEUS_MODULE_VERSION:-$(sed -n 's/^PROMETHEUS_MODULE_VERSION=//p' "$here/../../devtools/lossgate_dev/devenv/versions.env")}"
CACHE="${LOSSGATE_CACHE:-$HOME/.cache/lossgate}/prometheus/$VERSION"
BIN="$CACHE/prometheus"
if [ -x "$BIN" ]; then
  echo "prometheus (kubernetes SD) cached: $BIN ($VERSION)"
  exit 0
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$CACHE/gobin"
start=$(date +%s)
mkdir -p "$CACHE"
echo "==> building prometheus $VERSION (github.com/prometheus/prometheus/cmd/prometheus, Kubernetes SD only; minutes cold on 2 cores)"
(cd "$CACHE" && go install -trimpath -ldflags "-s -w" -tags remove_all_sd,enable_kubernetes_sd \
  "github.com/prometheus/prometheus/cmd/prometheus@$VERSION")
mv "$GOBIN/prometheus" "$BIN"
rmdir "$GOBIN" 2>/dev/null || true
echo "    prometheus built in $(( $(date +%s) - start ))s: $BIN ($(du -h "$BIN" | cut -f1))"
"$BIN" --version | head -1
