#!/usr/bin/env bash
# Builds Traefik (the Gateway API data plane of the node tier) from its Go module into a cache keyed
# by version: ${LOSSGATE_CACHE:-~/.cache/lossgate}/traefik/<version>/traefik. Skips when present.
# `go install module@version` refuses Traefik (its go.mod has replace directives), so the module's
# source is copied out of the Go module cache and built as the main module. A cold build takes
# minutes on 2 cores (see docs/local-node.md); nothing is downloaded except through GOPROXY.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-$(sed -n 's/^TRAEFIK_VERSION=//p' "$here/../../devtools/lossgate_dev/devenv/versions.env")}"
MODULE=github.com/traefik/traefik/v3
CACHE="${LOSSGATE_CACHE:-$HOME/.cache/lossgate}/traefik/$TRAEFIK_VERSION"
BIN="$CACHE/traefik"

if [ -x "$BIN" ]; then
  echo "traefik cached: $BIN ($TRAEFIK_VERSION)"
  exit 0
fi

gov="$(go env GOVERSION 2>/dev/null || echo none)"
case "$gov" in
  go1.2[5-9]*|go1.[3-9][0-9]*) ;;
  *) echo "error: Traefik $TRAEFIK_VERSION needs Go >= 1.25 to build; found '$gov'. Install a newer Go toolchain." >&2; exit 1 ;;
esac

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
start=$(date +%s)
mkdir -p "$CACHE"
echo "==> downloading $MODULE@$TRAEFIK_VERSION (Go module proxy)"
# Outside any go.mod, so that `go mod download` only fetches the module.
(cd "$CACHE" && go mod download "$MODULE@$TRAEFIK_VERSION")
moddir="$(go env GOMODCACHE)/$MODULE@$TRAEFIK_VERSION"
[ -f "$moddir/go.mod" ] || { echo "error: $moddir/go.mod missing after go mod download" >&2; exit 1; }

src="$CACHE/src"
rm -rf "$src"
cp -r "$moddir" "$src"
chmod -R u+w "$src"   # the module cache is read-only
cd "$src"
echo "==> building traefik $TRAEFIK_VERSION (resolves its dependencies, then compiles; minutes cold on 2 cores)"
go build -trimpath -ldflags "-s -w -X $MODULE/pkg/version.Version=$TRAEFIK_VERSION" -o "$BIN.tmp" ./cmd/traefik
mv "$BIN.tmp" "$BIN"
cd "$CACHE"
rm -rf "$src"   # the Go build cache keeps the compiled packages; the copy is not needed any more
echo "    traefik built in $(( $(date +%s) - start ))s: $BIN ($(du -h "$BIN" | cut -f1))"
"$BIN" version
