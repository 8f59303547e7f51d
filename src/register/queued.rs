//! A register update under the register's lock (the queued path of every strategy): queue
//! for the lock reading the value, or claim the handle's parked place; then write and
//! release in one transaction, keeping the next place when the update follows the previous
//! one closely.

use super::{Register, Updated, LOCK};
use crate::backend::{Condition, Write};
use crate::client::RunningUpdate;
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::metrics::Acquire;
use crate::queue::{Admitted, Waited};
use crate::strategy::Strategy;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use tracing::Instrument;

impl Register {
    /// Tasks of this session waiting for its local slot for the register's lock (one
    /// acquisition per key per session at a time).
    fn local_waiters(&self) -> usize {
        self.session.local_queue(self.lock.key()).waiting()
    }

    /// Queues for the register's lock, reading the value in the same transaction: held, and
    /// when it was admitted (with the value if at once). Counted in the metrics as a mutex
    /// acquisition, as the lock is the mutex of the register's name; its timer is kept in
    /// `timer` until it settles, so that an update that leaves the queue can end it without
    /// counting a cancelled acquisition (`queued_until`).
    async fn lock_reading(&self, timer: &mut Option<Acquire>) -> Result<(Holding, Option<Admitted>)> {
        let span = tracing::debug_span!(
            "register.lock",
            key = %self.key,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let started = timer.insert(Acquire::start(LOCK));
        let locked = self.lock.lock_reading(LOCK, &self.key).instrument(span.clone()).await;
        let (mut hold, admitted) = started.check(locked)?;
        if let Some(started) = timer.take() {
            started.admitted(&mut hold, &span);
        }
        Ok((hold, Some(admitted)))
    }

    /// Under the lock: read, then write and release in one transaction (again if an
    /// optimistic writer got in between).
    ///
    /// The read is skipped when the value at the lock's admission is already known: read by
    /// the queueing call itself when the lock was free at once, or (one client's tasks
    /// handing the lock to each other) left by the previous holder's write, which released
    /// the lock in the same transaction ([`ValueHints`](crate::local::value_hints)). The
    /// write stays conditional on the value's revision either way.
    ///
    /// The lock is the handle's parked place when it kept one; and the write keeps the next
    /// one when the update had to wait, follows the previous update closely and no other
    /// task of this session waits to update the register
    /// ([`with_requeue_window`](Register::with_requeue_window)).
    ///
    /// Its future is boxed: it is most of a register update's (4.4 of `update_async`'s
    /// 5.1 KB), and an update that does not queue would build and move it all the same — on
    /// the embedded store 400 of a lone optimistic update's 5,900 instructions (callgrind,
    /// 2026-12-04). Queueing costs round trips; the box is nothing beside them.
    pub(super) fn queued<'a, F, Fut>(
        &'a self,
        f: &'a mut F,
        may_keep_place: bool,
    ) -> Pin<Box<impl Future<Output = Result<Updated>> + Send + 'a>>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        Box::pin(async move {
            match self.queued_until(f, may_keep_place, std::future::pending::<Infallible>()).await? {
                Ok(updated) => Ok(updated),
                Err(never) => match never {},
            }
        })
    }

    /// Like [`queued`](Self::queued), for an update that queued by the in-process rule
    /// (another update of the register by this client runs, `Mode::Queue`), or that began
    /// as a compare-and-swap and joined its client's queue after the mode turned back to
    /// it (`Register::crowded_optimistic`): `None` if this
    /// client's adaptive updates of the key turned to compare-and-swap before the lock
    /// admitted it ([`Crowd::turned_optimistic`](crate::crowd::Crowd::turned_optimistic)).
    /// It then left the queue without running `f`, its key deleted in the background as a
    /// cancelled acquisition's is, no longer counts as running in the queue's mode
    /// (`RunningUpdate::left_queue`, on `running`), and the caller updates by
    /// compare-and-swap.
    pub(super) fn queued_unless_turned<'a, 'r: 'a, F, Fut>(
        &'a self,
        f: &'a mut F,
        running: &'a mut RunningUpdate<'r>,
    ) -> Pin<Box<impl Future<Output = Result<Option<Updated>>> + Send + use<'a, 'r, F, Fut>>>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        Box::pin(async move {
            let updated = self.queued_until(f, true, self.crowd().turned_optimistic()).await?.ok();
            if updated.is_none() {
                running.left_queue();
            }
            Ok(updated)
        })
    }

    /// A queued update, which leaves the queue with `leave`'s output if that completes
    /// before the lock admits it.
    async fn queued_until<F, Fut, L>(
        &self,
        f: &mut F,
        may_keep_place: bool,
        leave: L,
    ) -> Result<std::result::Result<Updated, L::Output>>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
        L: Future + Send,
    {
        let _queued = self.crowd().queued_update(self.strategy == Strategy::Adaptive);
        let follows_closely = may_keep_place && self.parking.begin();
        let updated = async {
            let client = self.session.client();
            let backend = client.backend();
            // Counted as waiting until it holds the lock: a task woken to claim a parked place has
            // left the session's slot queue, and must still stop the holder from keeping a place.
            let waiting = self.parking.wait();
            // The acquisition's metrics timer, outside the admission: an update that leaves
            // the queue ends it without counting a failure (it was not cancelled by anyone).
            let mut timer = None;
            let admission = async {
                loop {
                    // A place this handle parked holds the session's local slot for the lock: a task
                    // waiting for that slot claims the place instead when one is parked meanwhile.
                    let parked = self.parking.parked();
                    if let Some(place) = self.parking.claim() {
                        // Timed from the claim: the wait before it overlapped the previous update.
                        timer = Some(Acquire::start(LOCK));
                        match place.admitted().await {
                            Ok((mut hold, at, waited)) => {
                                // No span of its own.
                                if let Some(timer) = timer.take() {
                                    timer.admitted(&mut hold, &tracing::Span::none());
                                }
                                // A place that waited was admitted by the deletion at `at`. One that
                                // was first already when its follower read the queue has `at` of
                                // that read: this client's own write and release made it only if it
                                // is the place's own revision (nothing written since). Otherwise
                                // whose release admitted it is learnt from the value, which is read
                                // (`Crowd::admitted_by` of the revision that wrote it).
                                let known = hold.was_contended() || at == hold.token() as i64;
                                let admitted = known.then_some(Admitted { at, read: None, waited });
                                break Ok::<_, Error>((hold, admitted, waited, !known));
                            }
                            // Its key is deleted in the background; queue afresh (a lost session
                            // fails there, and is counted there).
                            Err(e) => {
                                if let Some(timer) = timer.take() {
                                    timer.abandon();
                                }
                                tracing::debug!(error = %e, "register: parked queue place failed");
                            }
                        }
                    }
                    tokio::select! {
                        biased;
                        held = self.lock_reading(&mut timer) => {
                            let (hold, admitted) = held?;
                            let waited = admitted.as_ref().and_then(|a| a.waited);
                            break Ok((hold, admitted, waited, false));
                        }
                        () = parked => {}
                    }
                }
            };
            let admission = tokio::select! {
                biased;
                admitted = admission => Ok(admitted?),
                left = leave => Err(left),
            };
            let (mut hold, admitted, waited, mut admitted_by_value) = match admission {
                Ok(admitted) => admitted,
                Err(left) => {
                    // Left before admitted: the lock's key goes in the background (the admission
                    // dropped mid-way is a cancelled acquisition), and `f` has not run.
                    if let Some(timer) = timer.take() {
                        timer.abandon();
                    }
                    return Ok(Err(left));
                }
            };
            drop(waiting);
            let token = hold.token();
            let mut known = match admitted {
                Some(Admitted { read: Some(read), .. }) => Some(read.map(|kv| (kv.value, kv.mod_revision))),
                Some(Admitted { at, read: None, .. }) => {
                    // Admitted by a write and release: this client's or another's. Told after
                    // the hint: the admission (a watch event) can come before the writer's
                    // answer, and `take` waits for a write of this client in flight, whose
                    // writer records it as its own before it finishes the hint.
                    let hint = client.value_hints().take(&self.key, at).await;
                    self.crowd().admitted_by(at);
                    hint.map(|v| Some((v, at)))
                }
                None => None,
            };
            let mut conflicts = 0;
            loop {
                let current = match known.take() {
                    Some(current) => current,
                    None => {
                        let kv = backend.get(&self.key).await?;
                        if std::mem::take(&mut admitted_by_value) {
                            if let Some(kv) = &kv {
                                self.crowd().admitted_by(kv.mod_revision);
                            }
                        }
                        kv.map(|kv| (kv.value, kv.mod_revision))
                    }
                };
                let (previous, revision) = current.map_or((None, None), |(v, r)| (Some(v), Some(r)));
                let started = tokio::time::Instant::now();
                let new = f(previous.clone(), Some(token)).await;
                let function = started.elapsed();
                let Some(new) = new else {
                    hold.release(LOCK).await?;
                    let updated = Updated { written: false, previous, conflicts, token: Some(token), revision: None };
                    return Ok(Ok(updated));
                };
                // Write, check that nobody changed the value, and release: one transaction. The
                // value is announced to this client's next queued update, which that release
                // may admit before this call has its answer.
                let unchanged = Condition::Modified { key: self.key.clone(), revision };
                let announced = client.value_hints().announce(&self.key, new.clone());
                let put = Write::Put { key: self.key.clone(), value: new, lease: None };
                // A kept place holds the session's local slot for the lock: not while another
                // task of this session waits for it, at the slot or for this handle's place.
                // Nor when an adaptive handle measured its queue dear, or its client's updates of
                // the key turned to compare-and-swap: it is leaving the queue (its next update
                // would give the place up, `Register::crowded_optimistic`).
                let keep_place = follows_closely
                    && hold.was_contended()
                    && self.local_waiters() == 0
                    && self.parking.waiting() == 0
                    && !(self.strategy == Strategy::Adaptive
                        && (self.adaptive.queue_is_dear()
                            || self.crowd().mode_now() == crate::crowd::Mode::Optimistic));
                let writing = tokio::time::Instant::now();
                let written = if keep_place {
                    // ... and queue again for this handle's next update.
                    let requeued = self.lock.write_and_requeue(&mut hold, &[unchanged], vec![put]).await?;
                    requeued.map(|(rev, place)| {
                        if let Some((pending, key)) = place {
                            let lock = (self.lock_prefix.clone(), self.key.clone());
                            let local = self.session.local_queue(self.lock.key());
                            self.parking.park(&self.session, lock, (pending, local), key, rev);
                        }
                        rev
                    })
                } else {
                    hold.write_and_release(&[unchanged], vec![put]).await?
                };
                // Recorded as this client's before the hint is finished: a queued update that
                // this write admitted waits for the hint, and then asks (`admitted_by`).
                self.crowd().wrote(written);
                announced.finish(written);
                let write = writing.elapsed();
                self.crowd().queued_times(function, write);
                // An adaptive handle weighs its queue's hand-offs (`src/adaptive.rs`) against
                // store round trips, of which this write is one: so a handle that stays queued
                // renews them. Its wait is weighed once, at the first write (a retry after an
                // optimistic writer got in between was not admitted again).
                if self.strategy == Strategy::Adaptive {
                    self.adaptive.write_took(write);
                    if conflicts == 0 {
                        match waited {
                            Some(Waited { ahead, took }) => self.adaptive.queue_measured(took, ahead, function),
                            None => self.adaptive.queued_at_once(),
                        }
                    }
                }
                if written.is_some() {
                    let updated = Updated { written: true, previous, conflicts, token: Some(token), revision: written };
                    return Ok(Ok(updated));
                }
                if !hold.is_valid()
                    || backend.get(hold.key()).await?.is_none_or(|kv| kv.create_revision != token as i64)
                {
                    return Err(Error::NotHeld {
                        what: "register",
                        reason: "the lock was lost during the update".into(),
                    });
                }
                conflicts += 1; // an optimistic writer got in between
            }
        }
        .await;
        self.parking.end();
        // An adaptive handle that measured its queue dear is leaving it: its optimistic
        // writes would each send this client's register feed an event to no use (on the
        // embedded store a task's wake-up, dearer than the write).
        if self.strategy == Strategy::Adaptive && self.adaptive.queue_is_dear() {
            self.session.client().close_idle_register_feed(&self.key);
        }
        updated
    }
}
