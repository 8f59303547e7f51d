//! The conformance suite: checks written once against `&Client`, run unchanged by every
//! backend's test file (`tests/memory.rs`, `tests/etcd.rs`). Backend differences are
//! parameters, never branches. Each check uses its own names, so checks may share a store.
#![allow(dead_code)]
pub mod backend;
pub mod election;
pub mod grouped;
pub mod lock_delay;
pub mod multi_lock;
pub mod mutex;
pub mod permits;
pub mod recipes;
pub mod register;
pub mod revoke;
pub mod rwlock;

use leasehold::Client;

/// What a crashed process looks like to the store: its lease is revoked, as expiry would
/// (the same call on every backend). Needs a multi-thread runtime.
pub fn crash(client: &Client) -> impl Fn(i64) + Sync + '_ {
    move |lease| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(client.backend().revoke_lease(lease)).unwrap()
        })
    }
}

/// The whole suite, one test per check: `conformance_suite!(runner)` expands to
/// `runner! { test_name => |client| check; … }`, and each backend's runner macro turns an
/// entry into a `#[tokio::test]` that builds a client on its store.
#[allow(unused_macros)] // not every test file runs the whole suite
macro_rules! conformance_suite {
    ($runner:ident) => {
        use conformance::backend as bk;
        use conformance::election as el;
        use conformance::grouped as gr;
        use conformance::multi_lock as ml;
        use conformance::mutex as mx;
        use conformance::permits as pm;
        use conformance::recipes::{self as rc, Mix};
        use conformance::register as rg;
        use conformance::rwlock as rw;
        use conformance::revoke as rv;
        use leasehold::Strategy::{Optimistic, Pessimistic};

        $runner! {
            mutual_exclusion_pessimistic => |c| mx::mutual_exclusion(c, Pessimistic, 8, 10);
            mutual_exclusion_optimistic => |c| mx::mutual_exclusion(c, Optimistic, 8, 10);
            try_lock_pessimistic => |c| mx::try_lock(c, Pessimistic);
            try_lock_optimistic => |c| mx::try_lock(c, Optimistic);
            timeout_pessimistic => |c| mx::timeout(c, Pessimistic);
            timeout_optimistic => |c| mx::timeout(c, Optimistic);
            cancellation_pessimistic => |c| mx::cancellation(c, Pessimistic, 150);
            cancellation_optimistic => |c| mx::cancellation(c, Optimistic, 150);
            ownership_safe_unlock => |c| mx::ownership_safe_unlock(c);
            lost_session => |c| mx::lost_session(c);
            fenced_write_if => |c| mx::fenced_write_if(c);
            writes_naming_a_key_twice_are_refused => |c| mx::writes_naming_a_key_twice_are_refused(c);
            with_lock_runs_under_the_lock_and_stops_when_lost => |c| mx::with_lock(c);
            with_permit_and_with_leadership => |c| rc::with_permit_and_with_leadership(c);
            waiter_loses_its_key_pessimistic => |c| mx::waiter_loses_its_key(c, Pessimistic);
            waiter_loses_its_key_optimistic => |c| mx::waiter_loses_its_key(c, Optimistic);
            reattach => |c| mx::reattach(c);
            keep_alive_contract => |c| mx::keep_alive_contract(c);
            transact_contract => |c| bk::transact_contract(c);
            create_prefix_empty_never_overwrites => |c| bk::create_prefix_empty_never_overwrites(c);
            create_with_a_moved_fence_changes_nothing => |c| bk::create_with_a_moved_fence_changes_nothing(c);
            watch_key_and_prefix_is_narrow => |c| bk::watch_key_and_prefix_is_narrow(c);
            write_under_a_gone_lease => |c| bk::write_under_a_gone_lease(c);
            lease_ttl_in_its_last_second => |c| bk::lease_ttl_in_its_last_second(c);
            reattach_takes_over_leftovers => |c| rc::reattach_takes_over_leftovers(c);
            reads_without_a_session => |c| rc::reads_without_a_session(c);
            leader_loop => |c| rc::leader_loop(c);
            leader_loop_optimistic => |c| el::leader_loop_optimistic(c);
            closing_the_session_ends_its_leadership_and_campaigns => |c| el::closing_the_session_ends_its_leadership_and_campaigns(c);
            a_wait_behind_the_sessions_own_holder_ends_with_the_session => |c| el::a_wait_behind_the_sessions_own_holder_ends_with_the_session(c);
            bad_input => |c| mx::bad_input(c);
            close_releases => |c| mx::close_releases(c);
            relock => |c| mx::relock(c);
            optimistic_give_up_deletes_an_adopted_leftover => |c| mx::optimistic_give_up_deletes_an_adopted_leftover(c);
            multi_lock_excludes_and_never_deadlocks_pessimistic => |c| ml::multi_lock_excludes_and_never_deadlocks(c, Pessimistic, 8);
            multi_lock_excludes_and_never_deadlocks_optimistic => |c| ml::multi_lock_excludes_and_never_deadlocks(c, Optimistic, 8);
            multi_lock_all_or_nothing => |c| ml::multi_lock_all_or_nothing(c);
            relock_cancellation => |c| mx::relock_cancellation(c, 60);
            relock_leftover_is_reclaimed => |c| mx::relock_leftover_is_reclaimed(c);
            relock_leftover_survives_a_cancelled_lock => |c| mx::relock_leftover_survives_a_cancelled_lock(c);
            leftover_key_survives_a_cancelled_lock => |c| mx::leftover_key_survives_a_cancelled_lock(c);
            settle_frees_the_slot => |c| mx::settle_frees_the_slot(c);
            revoke_mutex => |c| rv::revoke_mutex(c);
            revoke_each_recipe => |c| rv::revoke_each_recipe(c);
            revoke_leader_loop => |c| rv::revoke_leader_loop(c);
            revoking_a_waiter_fails_it_with_not_held => |c| rv::revoking_a_waiter_fails_it_with_not_held(c);
            revoke_leader_loop_waiting_or_kept => |c| rv::revoke_leader_loop_waiting_or_kept(c);

            semaphore_limit_holds_under_contention => |c| rc::semaphore_limit_holds_under_contention(c, Mix::Queued);
            semaphore_limit_holds_with_mixed_strategies => |c| rc::semaphore_limit_holds_under_contention(c, Mix::Mixed);
            semaphore_admits_in_arrival_order => |c| rc::semaphore_admits_in_arrival_order(c);
            semaphore_crashed_holder_permits_return => |c| rc::semaphore_crashed_holder_permits_return(c, &conformance::crash(c));
            semaphore_reacquire => |c| rc::semaphore_reacquire(c);
            semaphore_usage => |c| rc::semaphore_usage(c);
            semaphore_permit_count_mismatch => |c| rc::semaphore_permit_count_mismatch(c);
            semaphore_try_timeout_cancel_leave_nothing => |c| rc::semaphore_try_timeout_cancel_leave_nothing(c);
            semaphore_permits_limit_holds_under_contention => |c| pm::limit_holds_under_contention(c, Mix::Queued);
            semaphore_permits_limit_holds_with_mixed_strategies => |c| pm::limit_holds_under_contention(c, Mix::Mixed);
            semaphore_permits_weights_respected_pessimistic => |c| pm::weights_respected(c, Pessimistic);
            semaphore_permits_weights_respected_optimistic => |c| pm::weights_respected(c, Optimistic);
            semaphore_permits_big_request_not_passed => |c| pm::big_request_not_passed(c);
            semaphore_permits_bad_counts_refused => |c| pm::bad_counts_refused(c);
            semaphore_permits_try_timeout_cancel_leave_nothing => |c| pm::try_timeout_cancel_leave_nothing(c);
            semaphore_permits_usage_counts_weights => |c| pm::usage_counts_weights(c);
            semaphore_permits_reattach_takes_over_by_weight => |c| pm::reattach_takes_over_by_weight(c);
            rwlock_readers_share_writer_excludes => |c| rw::rwlock_readers_share_writer_excludes(c);
            rwlock_exclusion_under_contention => |c| rw::rwlock_exclusion_under_contention(c, Mix::Queued);
            rwlock_exclusion_with_mixed_strategies => |c| rw::rwlock_exclusion_under_contention(c, Mix::Mixed);
            rwlock_optimistic_waits_without_a_key => |c| rw::rwlock_optimistic_waits_without_a_key(c);
            rwlock_optimistic_reader_takes_over_its_leftover => |c| rw::rwlock_optimistic_reader_takes_over_its_leftover(c);
            rwlock_writer_not_starved_by_later_readers => |c| rw::rwlock_writer_not_starved_by_later_readers(c);
            rwlock_and_election_cancel_leave_nothing => |c| rc::rwlock_and_election_cancel_leave_nothing(c);
            election_campaign_leader_proclaim_resign => |c| el::election_campaign_leader_proclaim_resign(c);
            election_failover_after_resign => |c| el::election_failover_after_resign(c);
            election_failover_after_lease_expiry => |c| el::election_failover_after_lease_expiry(c, &conformance::crash(c));
            election_observe_reports_every_change => |c| el::election_observe_reports_every_change(c);
            election_tokens_increase_across_terms => |c| el::election_tokens_increase_across_terms(c);
            election_one_campaign_per_session => |c| el::election_one_campaign_per_session(c);
            election_strategies_keep_one_leader => |c| el::election_strategies_keep_one_leader(c, 6);
            election_optimistic_candidate_waits_without_a_key => |c| el::election_optimistic_candidate_waits_without_a_key(c);
            election_adaptive_queues_after_meeting_a_leader => |c| el::election_adaptive_queues_after_meeting_a_leader(c);

            register_mixed_strategies_lose_no_update => |c| rg::mixed_strategies_lose_no_update(c, 6, 10);
            register_adaptive_follows_contention => |c| rg::adaptive_follows_contention(c, 8, 20);
            register_adaptive_yields_to_a_busy_queue => |c| rg::adaptive_yields_to_a_busy_queue(c);
            register_adaptive_leaves_a_dear_queue => |c| rg::adaptive_leaves_a_dear_queue(c, 8);
            register_declined_update_writes_nothing => |c| rg::declined_update_writes_nothing(c);
            register_queued_update_reads_only_when_needed => |c| rg::queued_update_reads_only_when_needed(c);
            register_adaptive_tasks_of_one_client_queue_for_each_other => |c| rg::adaptive_tasks_of_one_client_queue_for_each_other(c, 6, 16);
            register_adaptive_optimistic_mode_yields_to_a_queue => |c| rg::adaptive_optimistic_mode_yields_to_a_queue(c, 8);
            register_adaptive_tasks_progress_beside_pessimistic_loops => |c| rg::adaptive_tasks_progress_beside_pessimistic_loops(c, 8);
            register_queued_loop_keeps_its_place => |c| rg::queued_loop_keeps_its_place(c, 4, 20, false);
            register_queued_loop_keeps_its_place_shared_client => |c| rg::queued_loop_keeps_its_place(c, 4, 20, true);
            register_parked_place_cancelled_leaves_nothing => |c| rg::parked_place_cancelled_leaves_nothing(c);
            grouped_optimistic => |c| gr::grouped_updates_are_exact_and_ordered(c, Optimistic, 8, 25);
            grouped_pessimistic => |c| gr::grouped_updates_are_exact_and_ordered(c, Pessimistic, 8, 25);
            grouped_adaptive => |c| gr::grouped_updates_are_exact_and_ordered(c, leasehold::Strategy::Adaptive, 8, 25);
            grouped_cancellation => |c| gr::grouped_cancellation_loses_nothing_and_applies_nothing_twice(c);
            grouped_panicking_update => |c| gr::grouped_panicking_update_fails_only_its_caller(c);
            grouped_unbounded_batches => |c| gr::grouped_unbounded_batches(c);
        }
    };
}
