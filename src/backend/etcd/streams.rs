//! The etcd backend's streams: a lease's keep-alive and a prefix watch.

use super::{for_lease, kv, map_err};
use crate::backend::{KeepAlive, LeaseId, Revision, WatchEvent, WatchStream};
use crate::error::{Error, Result};
use async_trait::async_trait;
use etcd_client::EventType;
use std::time::Duration;

pub(super) struct EtcdKeepAlive {
    pub(super) lease: LeaseId,
    pub(super) timeout: Duration,
    pub(super) keeper: etcd_client::LeaseKeeper,
    pub(super) stream: etcd_client::LeaseKeepAliveStream,
    /// A request was sent whose answer was not read (its `renew` was dropped, or timed
    /// out): the stream's next answer may be that one's, so the stream is not used again.
    pub(super) abandoned: bool,
}

#[async_trait]
impl KeepAlive for EtcdKeepAlive {
    async fn renew(&mut self) -> Result<Duration> {
        if self.abandoned {
            return Err(Error::Unavailable("etcd: keep-alive stream has an unanswered request; open a new one".into()));
        }
        let once = async {
            self.abandoned = true;
            let lease = Some(self.lease);
            self.keeper.keep_alive().await.map_err(|e| for_lease(map_err(e), lease))?;
            let answer = self.stream.message().await.map_err(|e| for_lease(map_err(e), lease))?;
            self.abandoned = false;
            match answer {
                Some(resp) if resp.ttl() > 0 => Ok(Duration::from_secs(resp.ttl() as u64)),
                Some(_) => Err(Error::LeaseNotFound { lease: self.lease }),
                None => Err(Error::Unavailable("etcd: keep-alive stream closed".into())),
            }
        };
        match tokio::time::timeout(self.timeout, once).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable("etcd: keep-alive timed out".into())),
        }
    }

    fn renewed_on_open(&self) -> bool {
        true
    }
}

pub(super) struct EtcdWatch {
    pub(super) start: Revision,
    pub(super) stream: etcd_client::WatchStream,
}

#[async_trait]
impl WatchStream for EtcdWatch {
    fn start_revision(&self) -> Revision {
        self.start
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            let Some(resp) = self.stream.message().await.map_err(map_err)? else {
                return Err(Error::Unavailable("etcd: watch stream ended".into()));
            };
            if resp.canceled() {
                return Err(Error::Unavailable(
                    format!(
                        "etcd: watch canceled (compact revision {}): {}",
                        resp.compact_revision(),
                        resp.cancel_reason()
                    )
                    .into(),
                ));
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let k = e.kv()?;
                    Some(match e.event_type() {
                        EventType::Put => WatchEvent::Put(kv(k)),
                        EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(k.key()).into_owned(),
                            revision: k.mod_revision(),
                        },
                    })
                })
                .collect();
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}
