//! The hour's baseline: the median time of one lone commit (a put, nothing else running)
//! on the etcd the bench uses, measured in the same run as the rows it scales. "× Lock RPC"
//! swings with the machine's hour (etcd's Lock RPC waits on a 100 ms timer while leasehold's
//! hand-off follows the commit latency); a row's time per operation in lone commits tells
//! the code from the hour.

use std::time::{Duration, Instant};

/// The median of `n` sequential puts of one key, in milliseconds.
pub async fn lone_commit_ms(endpoints: &[String], n: usize) -> f64 {
    let mut c = etcd_client::Client::connect(endpoints, None).await.expect("connect for the lone-commit baseline");
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let t = Instant::now();
        c.put("bench-lone-commit", i.to_string(), None).await.expect("lone commit");
        times.push(t.elapsed());
    }
    c.delete("bench-lone-commit", None).await.expect("clean up the baseline key");
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}
