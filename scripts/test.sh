#!/usr/bin/env bash
# Installs what is missing (protoc, libprotobuf-dev, etcd) and runs every test:
# unit, conformance on the embedded backend and on real etcd processes, doc tests,
# examples' builds, and the loom models.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --no-loom  # skip the loom models
set -euo pipefail
cd "$(dirname "$0")/.."

etcd_line=$(bash scripts/install-deps.sh | tail -n1)
export LEASEHOLD_ETCD_BIN_DIR="${etcd_line#ETCD_BIN_DIR=}"
echo "test: etcd from $LEASEHOLD_ETCD_BIN_DIR"

# Tests start their own etcd processes on free 127.0.0.1 ports; 2 test threads keep the
# 2-core machine from starving etcd's fsyncs.
# Libtest flags go only to libtest binaries: the benches (harness = false) parse their own
# arguments and would reject them, so they run apart, in test mode (they only say hello).
cargo test --workspace --lib --bins --tests --examples -- --test-threads=2 --skip fault_suite
cargo test --workspace --benches
# The fault-injection suite on its own, printing its figures (ops, faults, violations).
cargo test --test faults -- --nocapture --test-threads=2
cargo test --workspace --doc

if [ "${1:-}" != "--no-loom" ] && [ -x scripts/loom.sh ]; then
  scripts/loom.sh
fi
