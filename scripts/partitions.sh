#!/usr/bin/env bash
# The partition suite (tests/partitions.rs, issue 19, and cli/tests/partitions.rs for the
# `leasehold` binary's scenario, hence --workspace; see docs/guarantees.md "Partitions
# and slow links"): etcd members and clients on network namespaces of their own, cut off,
# isolated, slowed and flapped. Needs root (network namespaces, veth, bridge, iptables);
# in CI (CI=true) a harness that cannot be made fails the run.
#   1. the five scenarios against the library as it is, one at a time, with their figures;
#   2. two planted bugs, each behind --cfg leasehold_part_mutation_<name>, must make the
#      scenarios named for them fail, each with its own message (`says` below; a failure of
#      another kind does not count as catching the bug):
#      answer_time:    the validity deadline counted from a renewal's answer, not its
#                      request -> the slow link within the renewal budget (the client
#                      believes it holds after the server expired its lease);
#      renew_on_error: a renewal given up on after one renewal interval (failed or not
#                      answered) counted as one that succeeded -> the client cut off from
#                      every member, and the CLI on a cut host.
# Mutation builds go to target/part-mut/<name> (the cfgs would invalidate the normal build).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/common.sh
export CARGO_TERM_COLOR=never
failed=0
start=$(date +%s)

if ! cargo test --workspace --test partitions -- --test-threads=1 --nocapture partition_suite; then
  echo "partitions: FAILED against the library as it is"
  failed=1
fi
echo "partitions: the scenarios took $(( $(date +%s) - start )) s"

# name -> the scenarios it must break
declare -A breaks=(
  [answer_time]="partition_suite::a_slow_link_within_the_renewal_budget"
  [renew_on_error]="partition_suite::a_client_cut_off_from_every_member partition_suite::the_cli_on_a_host_that_is_cut_off"
)
# scenario -> what its failure must say for the planted bug to count as caught: a scenario
# also fails for reasons of its own (etcd not healthy, no trial renewed over the slow link,
# a timeout waiting for B), and such a failure says nothing about the planted bug.
declare -A says=(
  [a_slow_link_within_the_renewal_budget]="believed it held .* after the server expired its lease"
  [a_client_cut_off_from_every_member]="never reported its session lost"
  [the_cli_on_a_host_that_is_cut_off]="the cut host's command wrote after the other's began"
)
for name in answer_time renew_on_error; do
  dir="$root/target/part-mut/$name"
  mkdir -p "$dir"
  if ! RUSTFLAGS="--cfg leasehold_part_mutation_$name" CARGO_TARGET_DIR="$dir" \
      cargo test --no-run -q --workspace --test partitions >"$dir.build.log" 2>&1; then
    echo "partitions mutation $name: FAILED to build (see $dir.build.log)"
    show_log "$dir.build.log"
    failed=1
    continue
  fi
  for scenario in ${breaks[$name]}; do
    log="$dir.${scenario##*::}.log"
    if RUSTFLAGS="--cfg leasehold_part_mutation_$name" CARGO_TARGET_DIR="$dir" \
        cargo test -q --workspace --test partitions -- --exact "$scenario" --test-threads=1 >"$log" 2>&1; then
      echo "partitions mutation $name: NOT caught by $scenario (see $log)"
      show_log "$log"
      failed=1
    elif grep -q -- "${says[${scenario##*::}]}" "$log"; then
      why=$(grep -m1 -- "${says[${scenario##*::}]}" "$log" | cut -c1-200)
      echo "partitions mutation $name: caught by $scenario: $why"
    else
      echo "partitions mutation $name: NOT caught by $scenario: it failed, but not with \"${says[${scenario##*::}]}\" (see $log)"
      show_log "$log"
      failed=1
    fi
  done
  drop_build "$dir"
done
echo "partitions: $(( $(date +%s) - start )) s in all"
exit $failed
