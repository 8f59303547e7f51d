//! Opt-in: the conformance suite against a real TiKV cluster, given by its PD endpoints in
//! `LEASEHOLD_TIKV_PD` (`host:port[,host:port…]`). Without it every test prints that it is
//! skipped and passes: no TiKV can be installed on the CI machine (see
//! `tests/tikv.rs` for the suite against the in-process test server, which always runs).
//! Each test works under a fresh key root, so runs never see each other's keys.
#[macro_use]
mod conformance;

use conformance::mutex as mx;
use conformance::recipes as rc;
use leasehold::{Client, Strategy::*, TikvConfig};

async fn cluster(test: &str) -> Option<Client> {
    let Ok(pd) = std::env::var("LEASEHOLD_TIKV_PD") else {
        // Straight to stderr, past the test harness's output capture, so CI logs show it.
        let msg =
            format!("{test}: skipped (set LEASEHOLD_TIKV_PD=host:port,… to run it against a real TiKV cluster)\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let endpoints: Vec<String> = pd.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let config = TikvConfig::new(endpoints).root(format!("leasehold-test/{test}/{nanos:x}/"));
    Some(Client::tikv(config).await.expect("connect to LEASEHOLD_TIKV_PD"))
}

macro_rules! on_cluster {
    ($($name:ident => |$c:ident| $body:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(client) = cluster(stringify!($name)).await else { return };
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
    rwlock_exclusion_under_contention => |c| rc::rwlock_exclusion_under_contention(c);
    election_observe_reports_every_change => |c| rc::election_observe_reports_every_change(c);
    election_failover_after_lease_expiry => |c| rc::election_failover_after_lease_expiry(c, &crash(c));
}
