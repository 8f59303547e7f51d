//! The wakers of a set of waiting futures, each under an id of its own: the bookkeeping
//! shared by [`Signal`](super::signal::Signal) and [`Cleanups`](super::cleanups::Cleanups).
//! Kept inside the owner's lock, so that checking a condition and registering happen in
//! one step.

use std::task::Waker;

#[derive(Debug, Default)]
pub(crate) struct Wakers {
    next_id: u64,
    list: Vec<(u64, Waker)>,
}

impl Wakers {
    /// Registers `waker` for the future whose id is in `id` (giving it one on its first
    /// call), replacing its earlier waker, or adding it again if it was taken.
    pub(crate) fn register(&mut self, id: &mut Option<u64>, waker: &Waker) {
        #[cfg(not(leasehold_loom_mutation_ids))]
        let id = *id.get_or_insert_with(|| {
            self.next_id += 1;
            self.next_id
        });
        // Mutation for the loom suite: a new future's id is the number of wakers registered,
        // which a removal makes the id of a future still registered.
        #[cfg(leasehold_loom_mutation_ids)]
        let id = *id.get_or_insert(self.list.len() as u64);
        match self.list.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1.clone_from(waker),
            None => self.list.push((id, waker.clone())),
        }
    }

    /// Forgets the future's waker (it completed or was dropped).
    pub(crate) fn remove(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            self.list.retain(|(i, _)| *i != id);
        }
    }

    /// Takes every waker, to be woken once the owner's lock is released.
    pub(crate) fn take_all(&mut self) -> Vec<Waker> {
        #[allow(unused_mut)]
        let mut wakers: Vec<Waker> = std::mem::take(&mut self.list).into_iter().map(|(_, w)| w).collect();
        // Planted bug for the simulator's replay check (`scripts/sim.sh`): wakers in an order
        // drawn from the OS, as a `tokio::sync::watch` wakes its receivers.
        #[cfg(leasehold_sim_mutation_wake_order)]
        rand::seq::SliceRandom::shuffle(&mut wakers[..], &mut rand::rng());
        wakers
    }

    /// How many are registered.
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}
