//! The conformance suite: checks written once against `&Client`, run unchanged by every
//! backend's test file (`tests/memory.rs`, `tests/etcd.rs`). Backend differences are
//! parameters, never branches. Each check uses its own names, so checks may share a store.
#![allow(dead_code)]
pub mod lock_delay;
pub mod mutex;
pub mod recipes;
