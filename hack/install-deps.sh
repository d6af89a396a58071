#!/usr/bin/env bash
# Installs what a fresh machine lacks: Debian's Prometheus (+ promtool, Pushgateway), redis-server and
# the node tier's containerd, runc, CNI plugins, iptables, buildah and mmdebstrap.
# Idempotent; the Go builds and the Python venv are separate Makefile targets.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v redis-server >/dev/null || missing+=(redis-server)  # the joiner's shared store (tests, bench)
command -v openssl >/dev/null || missing+=(openssl)  # the local control plane's throw-away PKI
# The node tier (tests/node, docs/local-node.md): a container runtime, CNI plugins, iptables for
# kube-proxy, and the image tools (no registry and no Docker engine: images are built locally).
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v gcc >/dev/null || missing+=(gcc)  # the static pause binary
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packages' own services from starting: tests start their own.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
echo "prometheus: $(prometheus --version 2>&1 | head -1)"
echo "redis-server: $(redis-server --version)"
echo "containerd: $(containerd --version)"
