//! The change log read back: the poller that delivers each watch the events after its
//! cursor, in revision order.

use super::*;

/// Most log entries read by one poll.
pub(super) const POLL_BATCH: i64 = 256;

/// Reads the change log after the watches' cursors and hands out the events.
pub(super) async fn poller(inner: Weak<Inner>) {
    let mut delay = Duration::ZERO;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (min_interval, max_interval) = (strong.cfg.poll_interval, strong.cfg.poll_max_interval);
        let idle = {
            let mut w = strong.watches.lock();
            w.retain(|s| !s.tx.is_closed());
            w.is_empty()
        };
        if idle {
            let poke = strong.poke.clone();
            drop(strong);
            // Re-check now and then that the backend still exists.
            let _ = tokio::time::timeout(Duration::from_secs(1), poke.notified()).await;
            delay = Duration::ZERO;
            continue;
        }
        if !delay.is_zero() {
            let poke = strong.poke.clone();
            let wait = jittered(delay);
            drop(strong);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
            }
            let Some(s) = inner.upgrade() else { return };
            delay = if poll_once(&s).await { min_interval } else { (delay * 2).clamp(min_interval, max_interval) };
        } else {
            delay = if poll_once(&strong).await { Duration::ZERO } else { min_interval };
        }
    }
}

/// One poll. True if it delivered anything (or must go on at once).
pub(super) async fn poll_once(inner: &Arc<Inner>) -> bool {
    let from = match inner.watches.lock().iter().map(|s| s.cursor).min() {
        Some(c) => c,
        None => return false,
    };
    let backend = TikvBackend { inner: inner.clone() };
    let read = backend
        .run(
            false,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let compacted = decode_u64(tx.txn.get(tx.keys().compacted()).await?)? as Revision;
                    let upto = tx.base.min(from + POLL_BATCH);
                    let mut entries = Vec::new();
                    if upto > from {
                        let start = tx.keys().log(from + 1);
                        let end = tx.keys().log(upto + 1);
                        let skip = tx.keys().log(0).len() - 16;
                        let pairs: Vec<_> = tx.txn.scan(start..end, u32::MAX).await?.collect();
                        for p in pairs {
                            let k: Vec<u8> = p.key().clone().into();
                            let rev = std::str::from_utf8(&k[skip..])
                                .ok()
                                .and_then(|h| i64::from_str_radix(h, 16).ok())
                                .ok_or_else(|| corrupt("log key"))?;
                            entries.push((rev, decode_events(rev, p.value())?));
                        }
                        entries.sort_by_key(|(r, _)| *r);
                    }
                    Ok((compacted, upto, tx.base, entries))
                })
            }),
        )
        .await;
    let mut slots = inner.watches.lock();
    let (compacted, upto, latest, entries) = match read {
        Ok(r) => r,
        Err(e) => {
            // The watches can no longer promise anything: break them (they resynchronise).
            for s in slots.drain(..) {
                let _ = s.tx.send(Err(Error::Unavailable(format!("tikv: watch poll failed: {e}").into())));
            }
            return false;
        }
    };
    let mut delivered = false;
    slots.retain_mut(|slot| {
        if slot.cursor < compacted {
            let msg = format!(
                "tikv: watch at revision {} fell behind the change log (compacted to {compacted})",
                slot.cursor
            );
            let _ = slot.tx.send(Err(Error::Unavailable(msg.into())));
            return false;
        }
        if slot.cursor < from || slot.cursor >= upto {
            return !slot.tx.is_closed(); // not covered by this poll
        }
        for (rev, events) in &entries {
            if *rev <= slot.cursor {
                continue;
            }
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(&slot.prefix),
                    WatchEvent::Delete { key, .. } => key.starts_with(&slot.prefix),
                })
                .cloned()
                .collect();
            if !mine.is_empty() {
                delivered = true;
                if slot.tx.send(Ok(mine)).is_err() {
                    return false;
                }
            }
        }
        slot.cursor = upto;
        true
    });
    delivered || !entries.is_empty() || upto < latest
}
