#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and the node's kubelet,
# kube-scheduler and kube-proxy from Go modules
# (no registry hosts these binaries, and no Docker engine runs here) into a cache
# keyed by version. Rebuilds only what is missing. Prints progress: a cold build
# takes many minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${K8S_VERSION:-$(sed -n 's/^K8S_VERSION=//p' "$here/../../devtools/lossgate_dev/devenv/versions.env")}"
ETCD_VERSION="${ETCD_VERSION:-$(sed -n 's/^ETCD_VERSION=//p' "$here/../../devtools/lossgate_dev/devenv/versions.env")}"
CACHE="${LOSSGATE_CACHE:-$HOME/.cache/lossgate}/k8s/$K8S_VERSION"
BIN="$CACHE/bin"
mkdir -p "$BIN"

need=()
for b in kube-apiserver kube-controller-manager kubectl etcd kube-scheduler kubelet kube-proxy; do
  [ -x "$BIN/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "k8s binaries cached: $BIN (kubernetes $K8S_VERSION, etcd $ETCD_VERSION)"
  exit 0
fi

gov="$(go env GOVERSION 2>/dev/null || echo none)"
case "$gov" in
  go1.2[4-9]*|go1.[3-9][0-9]*) ;;
  *) echo "error: Kubernetes $K8S_VERSION needs Go >= 1.24 to build; found '$gov'. Install a newer Go toolchain." >&2; exit 1 ;;
esac

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging="v0.$minor.$patch"
work="$CACHE/src"
mkdir -p "$work"
cd "$work"

# The wrapper module: k8s.io/kubernetes replaces its staging modules with local
# paths, so a consumer must replace each of them with the published v0.X.Y.
echo "==> preparing wrapper module for kubernetes $K8S_VERSION (staging $staging)"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
{
  echo "module lossgate.local/k8sbins"
  echo
  echo "go 1.24.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
echo "==> resolving modules (go mod tidy; downloads from the Go module proxy)"
go mod tidy

ver="k8s.io/component-base/version"
cver="k8s.io/client-go/pkg/version"
ld="-s -w"
for p in "$ver" "$cver"; do
  ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

for b in "${need[@]}"; do
  case "$b" in
    etcd) pkg="go.etcd.io/etcd/server/v3" ;;
    *) pkg="k8s.io/kubernetes/cmd/$b" ;;
  esac
  echo "==> building $b ($pkg) — cold builds take several minutes each on 2 cores"
  start=$(date +%s)
  go build -trimpath -ldflags "$ld" -o "$BIN/$b.tmp" "$pkg"
  mv "$BIN/$b.tmp" "$BIN/$b"
  echo "    $b built in $(( $(date +%s) - start ))s"
done
echo "k8s binaries ready: $BIN"
