//! Leases whose expiry passed are reaped (their keys deleted, with change-log entries
//! that watchers see), and the change log is compacted behind every watch.

use super::*;

/// Reaps leases whose expiry has passed, so their keys' delete events reach watchers.
pub(super) async fn reaper(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let interval = strong.cfg.reap_interval;
        let now = strong.reap_now.clone();
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(jittered(interval)) => {}
            _ = now.notified() => {}
        }
        let Some(strong) = inner.upgrade() else { return };
        if let Err(e) = reap_due(&strong).await {
            tracing::debug!(error = %e, "tikv: reaping expired leases failed");
        }
    }
}

pub(super) async fn reap_due(inner: &Arc<Inner>) -> Result<()> {
    let backend = TikvBackend { inner: inner.clone() };
    let due: Vec<LeaseId> = backend
        .run(
            false,
            Arc::new(|tx| {
                Box::pin(async move {
                    let start = tx.keys().with("e/", b"");
                    let end = tx.keys().expiry_upto(tx.now_ms + 1);
                    let skip = start.len() + 17;
                    let keys: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, 64).await?.map(Into::into).collect();
                    Ok(keys
                        .iter()
                        .filter_map(|k| {
                            let hex = std::str::from_utf8(k.get(skip..)?).ok()?;
                            u64::from_str_radix(hex, 16).ok().map(|id| id as LeaseId)
                        })
                        .collect())
                })
            }),
        )
        .await?;
    for id in due {
        backend
            .run(
                true,
                Arc::new(move |tx| {
                    Box::pin(async move {
                        if !tx.alive(id).await? {
                            tx.reap(id).await?;
                        }
                        Ok(())
                    })
                }),
            )
            .await?;
    }
    Ok(())
}

/// Starts [`compact`] in the background (a plain function, so that the futures that
/// trigger it do not contain it).
pub(super) fn spawn_compaction(inner: Weak<Inner>, upto: Revision) {
    tokio::spawn(compact(inner, upto));
}

/// Removes change-log entries up to `upto` (bounded per run).
pub(super) async fn compact(inner: Weak<Inner>, upto: Revision) {
    let Some(inner) = inner.upgrade() else { return };
    let backend = TikvBackend { inner };
    let r = backend
        .run(
            false,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let done = decode_u64(tx.txn.get(tx.keys().compacted()).await?)? as Revision;
                    let upto = upto.min(done + 4096);
                    if upto <= done {
                        return Ok(());
                    }
                    let (start, end) = (tx.keys().log(done + 1), tx.keys().log(upto + 1));
                    let keys: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, u32::MAX).await?.map(Into::into).collect();
                    for k in keys {
                        tx.txn.delete(k).await?;
                    }
                    tx.txn.put(tx.keys().compacted(), (upto as u64).to_be_bytes().to_vec()).await?;
                    tx.dirty = true;
                    Ok(())
                })
            }),
        )
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "tikv: change log compaction failed (retried at the next one)");
    }
}
