//! The primitive shim: loom's types under `cfg(leasehold_loom)`, else parking_lot/std.
#![allow(unused_imports)]

#[cfg(not(leasehold_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
#[cfg(not(leasehold_loom))]
pub(crate) use std::sync::Arc;

#[cfg(leasehold_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
#[cfg(leasehold_loom)]
pub(crate) use loom::sync::Arc;

/// A mutex with parking_lot's infallible `lock()` in both builds.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(leasehold_loom))] parking_lot::Mutex<T>,
    #[cfg(leasehold_loom)] loom::sync::Mutex<T>,
);

#[cfg(not(leasehold_loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }
}

#[cfg(leasehold_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A poisoned lock means a model thread panicked: the model already failed.
        self.0.lock().unwrap()
    }
}
