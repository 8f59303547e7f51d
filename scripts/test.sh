#!/usr/bin/env bash
# Installs what is missing (protoc, libprotobuf-dev, etcd) and runs every test:
# unit, conformance on the embedded backend and on real etcd processes, doc tests,
# examples' builds, the partition suite, the deterministic simulation and the loom models.
#
#   scripts/test.sh            # everything (with the simulation, scripts/sim.sh)
#   scripts/test.sh --no-loom  # skip the loom models
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

deps=$(bash scripts/install-deps.sh)
etcd_line=$(echo "$deps" | grep '^ETCD_BIN_DIR=' | tail -n1)
etcd34_line=$(echo "$deps" | grep '^ETCD34_BIN_DIR=' | tail -n1 || true)
export LEASEHOLD_ETCD_BIN_DIR="${etcd_line#ETCD_BIN_DIR=}"
echo "test: etcd from $LEASEHOLD_ETCD_BIN_DIR ($("$LEASEHOLD_ETCD_BIN_DIR/etcd" --version | sed -n 1p))"

# Tests start their own etcd processes on free 127.0.0.1 ports; 2 test threads keep the
# 2-core machine from starving etcd's fsyncs.
# Libtest flags go only to libtest binaries: the benches (harness = false) parse their own
# arguments and would reject them, so they run apart, in test mode (they only say hello).
cargo test --workspace --lib --bins --tests --example flash_sale -- --test-threads=2 --skip fault_suite --skip partition_suite
# A conformance check run in a build with planted bugs must fail, saying `expected`:
# plant_caught FLAGS TARGET_DIR TEST_FILE TEST_NAME EXPECTED [SHOWN, a regex of what to echo]
plant_caught() {
  local flags=$1 dir=$2 file=$3 name=$4 expected=$5 shown=${6:-}
  local log=target/plant-$name.log
  if RUSTFLAGS="$flags" CARGO_TARGET_DIR=$dir \
      cargo test --no-default-features --test "$file" "$name" >"$log" 2>&1; then
    echo "test: planted bug NOT caught by $name" >&2
    exit 1
  elif ! grep -qF "$expected" "$log"; then
    echo "test: the planted-bug run of $name failed otherwise (see $log)" >&2
    show_log "$log" >&2
    exit 1
  fi
  if [ -n "$shown" ]; then
    echo "test: planted bug caught by $name: $(grep -m1 -o "$shown" "$log")"
  else
    echo "test: planted bug caught by $name: $(grep -m1 -oF "$expected" "$log")"
  fi
}
# Two planted bugs of the adaptive register, in one build: the queue check in its measured
# compare-and-swap mode planted out (--cfg leasehold_crowd_mutation_unchecked), and handles
# that ignore what their queue's hand-offs cost (--cfg leasehold_adaptive_mutation_dear_ignored).
crowd_flags="--cfg leasehold_crowd_mutation_unchecked --cfg leasehold_adaptive_mutation_dear_ignored"
plant_caught "$crowd_flags" target/crowd-mut memory register_adaptive_optimistic_mode_yields_to_a_queue \
  "barged past the queue" "the queued updates failed [^(]*"
plant_caught "$crowd_flags" target/crowd-mut memory register_adaptive_leaves_a_dear_queue \
  "stayed in a dear queue" "[0-9]* of the last [0-9]* updates queued"
drop_build target/crowd-mut
# Seven planted bugs, in one build: the optimistic (compare-and-swap) acquisition planted
# blind (--cfg leasehold_cas_mutation_blind: it creates its key whoever holds the name and
# counts it as held) must make the election's strategy check see two leaders; a multi-lock
# that takes its names in the order given (--cfg leasehold_multilock_mutation_unordered)
# must deadlock its check (which then fails after 30 s without progress); the semaphore's
# weighted rule planted to count every key as 1 (--cfg leasehold_permits_mutation_unweighted)
# must let a try take permits beyond the count; a revocation without its create-revision
# check (--cfg leasehold_revoke_mutation_unchecked) must remove a newer holder; a session
# fence that never moves (--cfg leasehold_fence_mutation_frozen) must let a create that
# arrives after its key was released make the key again; a re-attached session's leftover
# relock key that a dropped lock took over and then left to nobody
# (--cfg leasehold_leftover_mutation_kept) must keep the lock taken once the session settled;
# and the lease's other key taken off the leftovers before the create that adopts it
# (--cfg leasehold_leftover_mutation_early) must be left holding, listed nowhere.
plant_flags="--cfg leasehold_cas_mutation_blind --cfg leasehold_multilock_mutation_unordered"
plant_flags="$plant_flags --cfg leasehold_permits_mutation_unweighted --cfg leasehold_revoke_mutation_unchecked"
plant_flags="$plant_flags --cfg leasehold_fence_mutation_frozen --cfg leasehold_leftover_mutation_kept"
plant_flags="$plant_flags --cfg leasehold_leftover_mutation_early"
plant_caught "$plant_flags" target/cas-mut memory election_strategies_keep_one_leader "two leaders at once"
plant_caught "$plant_flags" target/cas-mut memory multi_lock_excludes_and_never_deadlocks_pessimistic \
  "a deadlock?): no progress"
plant_caught "$plant_flags" target/cas-mut memory semaphore_permits_weights_respected \
  "a try for 3 took permits with 3 of 5 held"
plant_caught "$plant_flags" target/cas-mut memory revoke_mutex "a stale revocation removed"
plant_caught "$plant_flags" target/cas-mut safety a_create_arriving_after_its_key_was_released_and_audited_is_refused \
  "the late create landed"
plant_caught "$plant_flags" target/cas-mut memory relock_leftover_survives_a_cancelled_lock \
  "the lock is not free" "dropped after [0-9]* polls: the lock is not free"
plant_caught "$plant_flags" target/cas-mut memory leftover_key_survives_a_cancelled_lock \
  "the earlier key holds, and is no leftover" "dropped after [0-9]* polls: the earlier key holds, and is no leftover"
drop_build target/cas-mut
cargo test --workspace --doc
# Examples and benches: built, and benches smoke-run once (criterion's test mode; the
# etcd benches only measure under `cargo bench`).
cargo build --workspace --examples
# The README's first command (the main job on the embedded backend), in a debug build.
cargo run --no-default-features --example flash_sale -- --units 100
# The main job across OS processes: 3 buyer processes on one etcd that this script starts
# on free 127.0.0.1 ports and stops again.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
client_port=$(free_port); peer_port=$(free_port); etcd_dir=$(mktemp -d)
"$LEASEHOLD_ETCD_BIN_DIR/etcd" --name sale --data-dir "$etcd_dir/data" \
  --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "sale=http://127.0.0.1:$peer_port" >"$etcd_dir/log" 2>&1 &
etcd_pid=$!
trap 'kill "$etcd_pid" 2>/dev/null || true; rm -rf "$etcd_dir"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$client_port") 2>/dev/null && break; sleep 0.1; done
cargo run --example flash_sale -- --backend "etcd://127.0.0.1:$client_port" --processes 3 --buyers 6 --units 60
kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$etcd_dir"; trap - EXIT
cargo test --workspace --benches
cargo test --features metrics --lib --test metrics
# The fault-injection suite on its own, printing its figures (ops, faults, violations).
cargo test --test faults -- --nocapture --test-threads=2

# TiKV: the backend through the real tikv-client against the in-process PD+TiKV test
# server (tikv-test-server/), the server's own tests, and the opt-in real-cluster suite
# (it says it is skipped unless LEASEHOLD_TIKV_PD is set). The test server is a path
# dev-dependency that leasehold's features cannot turn on (that would break publishing):
# `tikv-test-server/server` on the command line does.
# The leasehold TiKV tests first: their build brings tikv-client into the cargo registry,
# whose proto files the test server's own build then needs (it does not depend on it).
# (tikv_cluster's tests are #[ignore]d without a real cluster: counted as ignored, not passed.)
cargo test --features tikv,tikv-test-server/server --lib --test tikv --test tikv_test_server --test tikv_cluster -- --test-threads=2
cargo test -p tikv-test-server --features server
cargo test --features tikv,tikv-test-server/server --bench tikv_handoff

# The conformance suite again, against Debian's etcd 3.4.
if [ -n "$etcd34_line" ]; then
  echo "test: conformance against etcd 3.4 from ${etcd34_line#ETCD34_BIN_DIR=}"
  LEASEHOLD_ETCD_BIN_DIR="${etcd34_line#ETCD34_BIN_DIR=}" cargo test --workspace --test etcd --test cli --test security -- --test-threads=2
elif [ "${CI:-}" = true ]; then
  echo "test: etcd 3.4 missing in CI" >&2
  exit 1
fi

# Partitions and slow links on network namespaces (root), then two planted bugs it must catch.
bash scripts/partitions.sh

# The deterministic simulation: 2000 seeds, then each planted bug of issue 17 must be caught.
bash scripts/sim.sh

if [ "${1:-}" != "--no-loom" ]; then
  bash scripts/loom.sh
fi
