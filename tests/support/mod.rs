//! Test harness shared by the integration tests.
#![allow(dead_code)]
pub mod certs;
pub mod etcd;
pub mod net;
pub mod proc;
