//! Loom models of leasehold's in-process shared state.
//!
//! This crate compiles the library's own `src/local/` files by path, so the models check
//! the very code the library runs. Those files take their primitives from `local::sync`,
//! which is loom's when built with `RUSTFLAGS="--cfg leasehold_loom"` and
//! parking_lot/std otherwise. Without that cfg the crate only type-checks the local
//! modules and contains no tests (a plain `cargo test --workspace` stays fast).
//!
//! Run everything with `scripts/loom.sh`; see `docs/guarantees.md`, section
//! "Model-checked local state".

// The local modules are written for the library, which uses all of them; here only the
// models (built under `cfg(all(test, leasehold_loom))`) use them.
#[allow(dead_code)]
#[path = "../../src/local/mod.rs"]
mod local;

#[cfg(all(test, leasehold_loom))]
mod combining;
#[cfg(all(test, leasehold_loom))]
mod keys;
#[cfg(all(test, leasehold_loom))]
mod models;
