#!/usr/bin/env bash
# Runs the loom models of src/local (crate loom-tests; see docs/guarantees.md, section
# "Model-checked local state"):
#   1. every model against the library's code, under --cfg leasehold_loom;
#   2. once per mutation cfg (--cfg leasehold_loom_mutation_{release,fence,deadline,queue,cleanups,hints,seen,doom,claim,
#      combine,order,withdraw,revive,arrival,fire,ids,unlanded,undoom}),
#      where the matching model is #[should_panic] and must catch the planted bug, and
#      the other models must still pass.
# Prints one summary line per run and exits non-zero if any run fails. Builds in
# target/loom (override with LEASEHOLD_LOOM_TARGET_DIR) so the cfgs do not invalidate
# the normal build cache. Each of the nineteen cfg sets (the models, then eighteen mutations)
# builds loom and its dependencies once:
# from an empty target dir the script took 488 s on 2 busy cores (2026-12-05, nineteen
# sets), a warm mutation run about 8 s.
#
#   LOOM_MAX_PREEMPTIONS  preemption bound (default 3; why: loom-tests/src/models.rs)
#   LOOM_RUN_TIMEOUT      seconds allowed per run, build included (default 600)
#   LOOM_VERBOSE=1        also print every model's line (executions explored)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${LEASEHOLD_LOOM_TARGET_DIR:-$root/target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export CARGO_TERM_COLOR=never
timeout_s="${LOOM_RUN_TIMEOUT:-600}"
logs="$CARGO_TARGET_DIR/logs"
mkdir -p "$logs"

failed=0
start_all=$(date +%s)

# run NAME EXPECTED_CAUGHT_MODEL RUSTFLAGS
run() {
  local name=$1 caught=$2 flags=$3 log="$logs/$1.log" start rc passed total line
  start=$(date +%s)
  RUSTFLAGS="$flags" timeout "$timeout_s" \
    cargo test -p leasehold-loom-tests --release --lib -- --show-output >"$log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - start ))
  passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | sed -n 1p)
  total=$(sed -n 's/^loom [a-z_]*: ok, \([0-9]*\) executions.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
  if [ "$rc" = 0 ] && [ -n "$caught" ]; then
    # The should_panic test passed only if it panicked with its own assertion's message;
    # check that it ran and that loom reported the violation.
    line=$(grep -E "^loom $caught: VIOLATION found in execution [0-9]+" "$log" | sed -n 1p)
    if ! grep -qE "^test [a-z_]+::$caught - should panic \.\.\. ok" "$log" || [ -z "$line" ]; then
      rc=1
    fi
  fi
  if [ "$rc" = 0 ] && [ -z "$caught" ] && grep -q "VIOLATION" "$log"; then
    rc=1
  fi
  if [ "$rc" = 0 ]; then
    if [ -n "$caught" ]; then
      echo "loom $name: ok, caught by $caught (${line#*: }); ${passed:-0} tests passed, $total executions in the other models, ${secs}s"
    else
      echo "loom $name: ok, ${passed:-0} models passed, $total executions, preemption bound $LOOM_MAX_PREEMPTIONS, ${secs}s"
    fi
    if [ "${LOOM_VERBOSE:-0}" = 1 ]; then
      sed -n 's/^loom /  /p' "$log"
    fi
  else
    failed=1
    if [ "$rc" = 124 ]; then
      echo "loom $name: FAILED (timed out after ${timeout_s}s); log: $log"
    else
      echo "loom $name: FAILED (exit $rc, ${secs}s); log: $log"
    fi
    grep -E "^loom |panicked|^test .*FAILED|^error" "$log" | sed -n 1,20p | sed 's/^/  /'
  fi
}

run models "" "--cfg leasehold_loom"
run mutation-release release_happens_exactly_once "--cfg leasehold_loom --cfg leasehold_loom_mutation_release"
run mutation-fence fence_never_accepts_lower_after_higher "--cfg leasehold_loom --cfg leasehold_loom_mutation_fence"
run mutation-deadline session_deadline_never_moves_back "--cfg leasehold_loom --cfg leasehold_loom_mutation_deadline"
run mutation-queue cancelled_local_waiter_passes_the_slot_on "--cfg leasehold_loom --cfg leasehold_loom_mutation_queue"
run mutation-cleanups settle_waits_for_every_cleanup "--cfg leasehold_loom --cfg leasehold_loom_mutation_cleanups"
run mutation-hints value_hint_reaches_the_next_holder "--cfg leasehold_loom --cfg leasehold_loom_mutation_hints"
run mutation-seen watched_value_never_replaces_own_write "--cfg leasehold_loom --cfg leasehold_loom_mutation_seen"
run mutation-doom a_key_stays_doomed_while_a_cleanup_of_it_runs "--cfg leasehold_loom --cfg leasehold_loom_mutation_doom"
run mutation-claim a_claimed_key_is_never_doomed_by_the_audit "--cfg leasehold_loom --cfg leasehold_loom_mutation_claim"
run mutation-combine grouped_updates_taken_once_in_order_and_answered "--cfg leasehold_loom --cfg leasehold_loom_mutation_combine"
run mutation-order grouped_updates_taken_once_in_order_and_answered "--cfg leasehold_loom --cfg leasehold_loom_mutation_order"
run mutation-withdraw withdrawn_update_is_never_applied "--cfg leasehold_loom --cfg leasehold_loom_mutation_withdraw"
run mutation-revive lost_session_never_revives "--cfg leasehold_loom --cfg leasehold_loom_mutation_revive"
run mutation-arrival local_waiters_served_in_arrival_order "--cfg leasehold_loom --cfg leasehold_loom_mutation_arrival"
run mutation-fire lost_signal_reaches_every_waiter_once "--cfg leasehold_loom --cfg leasehold_loom_mutation_fire"
run mutation-ids cancelled_signal_waiter_leaves_nothing "--cfg leasehold_loom --cfg leasehold_loom_mutation_ids"
run mutation-unlanded unlanded_write_wakes_the_waiter_with_nothing "--cfg leasehold_loom --cfg leasehold_loom_mutation_unlanded"
run mutation-undoom undoom_frees_the_key_and_wakes_its_waiter "--cfg leasehold_loom --cfg leasehold_loom_mutation_undoom"

total_s=$(( $(date +%s) - start_all ))
if [ "$failed" = 0 ]; then
  echo "loom: all runs passed in ${total_s}s"
else
  echo "loom: FAILED (${total_s}s)"
fi
exit "$failed"
