//! Criterion: the uncontended acquire/release cycle of each primitive — on the embedded
//! backend always, and on a real etcd (started here) when running as a benchmark.
//!
//! ```text
//! cargo bench --bench cycle
//! cargo bench --bench cycle -- memory       # only the embedded backend
//! ```

#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use criterion::{criterion_group, criterion_main, Criterion};
use leasehold::{Client, Election, Mutex, Register, Semaphore, Session, Strategy};
use tokio::runtime::Runtime;

fn cycles(c: &mut Criterion, rt: &Runtime, backend: &str, session: &Session) {
    let mut group = c.benchmark_group(backend);
    for (label, strategy) in [("mutex/pessimistic", Strategy::Pessimistic), ("mutex/optimistic", Strategy::Optimistic)]
    {
        let m = Mutex::new(session, label.replace('/', "-").as_str()).unwrap().with_strategy(strategy);
        group.bench_function(label, |b| {
            b.to_async(rt).iter(|| async { m.lock().await.unwrap().unlock().await.unwrap() })
        });
    }
    // A worker that keeps the lock: each iteration one relock (release and queue again in
    // one transaction) instead of an unlock and a lock.
    let m = Mutex::new(session, "mutex-relock").unwrap();
    let guard = rt.block_on(m.lock()).unwrap();
    let held = tokio::sync::Mutex::new(guard);
    group.bench_function("mutex/relock", |b| {
        b.to_async(rt).iter(|| async { m.relock(&mut *held.lock().await).await.unwrap() })
    });
    rt.block_on(held.into_inner().unlock()).unwrap();
    let sem = Semaphore::new(session, "sem", 4).unwrap();
    group.bench_function("semaphore", |b| {
        b.to_async(rt).iter(|| async { sem.acquire().await.unwrap().release().await.unwrap() })
    });
    let permit = rt.block_on(sem.acquire()).unwrap();
    let held = tokio::sync::Mutex::new(permit);
    group.bench_function("semaphore/reacquire", |b| {
        b.to_async(rt).iter(|| async { sem.reacquire(&mut *held.lock().await).await.unwrap() })
    });
    rt.block_on(held.into_inner().release()).unwrap();
    let e = Election::new(session, "election").unwrap();
    group.bench_function("election", |b| {
        b.to_async(rt).iter(|| async { e.campaign("v").await.unwrap().resign().await.unwrap() })
    });
    let r = Register::new(session, "register").unwrap();
    group.bench_function("register/optimistic", |b| {
        b.to_async(rt).iter(|| async { r.update(|_| Some(b"x".to_vec())).await.unwrap() })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let memory = rt.block_on(async { Client::memory().session().await.unwrap() });
    cycles(c, &rt, "memory", &memory);
    // A real etcd only when measuring (`cargo bench`), not when `cargo test` smoke-runs benches.
    if std::env::args().any(|a| a == "--bench") {
        let cluster = etcd::EtcdCluster::single();
        let session = rt.block_on(async { cluster.client().await.session().await.unwrap() });
        cycles(c, &rt, "etcd", &session);
    }
}

criterion_group!(cycle, benches);
criterion_main!(cycle);
