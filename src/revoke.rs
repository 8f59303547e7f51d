//! Revocation (Curator's `InterProcessMutex` revocation, done by the store): an operator
//! releases a stuck holder's key with one conditional delete, so a stale revocation never
//! removes a newer holder. See `docs/guarantees.md` ("Revocation").

use crate::backend::{Condition, Revision, Write};
use crate::error::{Error, Result};
use crate::guard::Holder;
use crate::Client;

impl Client {
    /// Every key under the name `name` now — whatever the recipe (mutex, election,
    /// semaphore, read-write lock, `etcdctl lock`): its holders and its waiters, oldest
    /// first — each as a [`Holder`] (key, token, lease). A snapshot, for an operator to
    /// pick what to [`revoke`](Self::revoke).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let client = Client::memory();
    /// let session = client.session().await?;
    /// let permit = Semaphore::new(&session, "encoders", 2)?.acquire().await?;
    /// let entries = client.entries("encoders").await?;
    /// assert_eq!(entries.len(), 1);
    /// assert_eq!((entries[0].token, entries[0].lease), (permit.fencing_token(), session.lease_id()));
    /// # permit.release().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn entries(&self, name: &str) -> Result<Vec<Holder>> {
        let (kvs, _) = self.backend().range_prefix(&self.prefix_of(name)?, 0).await?;
        Ok(kvs.into_iter().map(Holder::of).collect())
    }

    /// Releases `holder`'s key under the name `name` on an operator's behalf (a holder
    /// stuck with its lease still renewed), **only if the key still belongs to that
    /// acquisition**: it must still have the holder's lease and create revision (its
    /// token). `Ok(true)`: it was deleted; `Ok(false)`: nothing was, because the key is gone
    /// or now belongs to a newer acquisition (a stale revocation never removes a newer
    /// holder). The delete is one conditional write on the create revision; the lease is
    /// checked on a read just before it (a key's lease is the one it was created with:
    /// the create revision pins both).
    ///
    /// Whoever waits next is admitted as after a release. The revoked holder's guard
    /// reports it: its [`lost`](crate::MutexGuard::lost) completes (once polled) and its
    /// fenced writes are refused with [`Error::NotHeld`], being conditional on the same
    /// create revision. Its session is untouched (revoke the lease,
    /// [`Backend::revoke_lease`](crate::Backend::revoke_lease), to end the whole process's
    /// hold). Works for waiters' keys too: the waiter's acquisition then fails with
    /// [`Error::NotHeld`] (its session lives on; a lock-delay's wait ends the same way).
    ///
    /// Fails with [`Error::InvalidName`] for a bad name and [`Error::InvalidArgument`] if
    /// the holder's key is not a key of `name` in this client's namespace.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex};
    /// let client = Client::memory();
    /// let session = client.session().await?;
    /// let guard = Mutex::new(&session, "nightly-report")?.lock().await?;
    /// let stuck = client.holder("nightly-report").await?.expect("held");
    /// assert!(client.revoke("nightly-report", &stuck).await?);
    /// assert!(!client.revoke("nightly-report", &stuck).await?, "already gone: nothing to do");
    /// assert!(guard.fenced_put("report/owner", "me").await.is_err(), "refused once revoked");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// A call dropped while in flight may or may not have deleted the key (and only that
    /// acquisition's); calling it again is safe.
    pub async fn revoke(&self, name: &str, holder: &Holder) -> Result<bool> {
        let prefix = self.prefix_of(name)?;
        let key = &holder.key;
        if !key.starts_with(&prefix) || key.len() == prefix.len() {
            let reason = format!("{key:?} is not a key of {name:?} (under {prefix:?})");
            return Err(Error::invalid("revoke", reason));
        }
        let Ok(token) = Revision::try_from(holder.token) else {
            return Err(Error::invalid("revoke", format!("token {} is out of range", holder.token)));
        };
        let backend = self.backend();
        match backend.get(key).await? {
            Some(kv) if kv.lease == holder.lease => {}
            _ => return Ok(false),
        }
        #[cfg(not(leasehold_revoke_mutation_unchecked))]
        let held = [Condition::Created { key: key.clone(), revision: token }];
        // Mutation (scripts/test.sh): delete whatever the key is now, without the
        // create-revision check; the stale-revocation checks must catch it.
        #[cfg(leasehold_revoke_mutation_unchecked)]
        let held: [Condition; 0] = {
            let _ = token;
            []
        };
        let revoked = backend.write_if(&held, vec![Write::Delete { key: key.clone() }]).await?.is_some();
        if revoked {
            tracing::warn!(%key, token, lease = format_args!("{:x}", holder.lease), "revoked");
        }
        Ok(revoked)
    }
}
