//! Opt-in: the conformance suite against a real TiKV cluster, given by its PD endpoints in
//! `LEASEHOLD_TIKV_PD` (`host:port[,host:port…]`). Every test is `#[ignore]`d, so it is
//! counted as ignored, never as passed, where no TiKV can be had (the CI machine; see
//! `tests/tikv.rs` for the suite against the in-process test server, which always runs):
//!
//! ```text
//! LEASEHOLD_TIKV_PD=pd1:2379,pd2:2379 cargo test --features tikv --test tikv_cluster -- --ignored
//! ```
//!
//! Run with `--ignored` but without `LEASEHOLD_TIKV_PD`, every test fails and says why.
//! Each test works under a fresh key root, so runs never see each other's keys.
#[macro_use]
mod conformance;

use conformance::election as el;
use conformance::mutex as mx;
use conformance::recipes as rc;
use conformance::rwlock as rw;
use leasehold::{Client, Strategy::*, TikvConfig};

async fn cluster(test: &str) -> Client {
    let Ok(pd) = std::env::var("LEASEHOLD_TIKV_PD") else {
        panic!("{test}: set LEASEHOLD_TIKV_PD=host:port,… to run it against a real TiKV cluster");
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let endpoints: Vec<String> = pd.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let config = TikvConfig::new(endpoints).root(format!("leasehold-test/{test}/{nanos:x}/"));
    Client::tikv(config).await.expect("connect to LEASEHOLD_TIKV_PD")
}

macro_rules! on_cluster {
    ($($name:ident => |$c:ident| $body:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs a real TiKV cluster: LEASEHOLD_TIKV_PD=host:port,… and --ignored"]
        async fn $name() {
            let client = cluster(stringify!($name)).await;
            let $c = &client;
            $body.await;
        }
    )*};
}

fn crash(client: &Client) -> impl Fn(i64) + Sync + '_ {
    move |lease| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(client.backend().revoke_lease(lease)).unwrap()
        })
    }
}

on_cluster! {
    mutual_exclusion_pessimistic => |c| mx::mutual_exclusion(c, Pessimistic, 8, 10);
    mutual_exclusion_optimistic => |c| mx::mutual_exclusion(c, Optimistic, 8, 10);
    try_lock_pessimistic => |c| mx::try_lock(c, Pessimistic);
    timeout_optimistic => |c| mx::timeout(c, Optimistic);
    cancellation_pessimistic => |c| mx::cancellation(c, Pessimistic, 100);
    lost_session => |c| mx::lost_session(c);
    reattach => |c| mx::reattach(c);
    close_releases => |c| mx::close_releases(c);
    semaphore_limit_holds_under_contention => |c| rc::semaphore_limit_holds_under_contention(c, rc::Mix::Mixed);
    semaphore_crashed_holder_permits_return => |c| rc::semaphore_crashed_holder_permits_return(c, &crash(c));
    rwlock_exclusion_under_contention => |c| rw::rwlock_exclusion_under_contention(c, rc::Mix::Queued);
    election_observe_reports_every_change => |c| el::election_observe_reports_every_change(c);
    election_failover_after_lease_expiry => |c| el::election_failover_after_lease_expiry(c, &crash(c));
}
