//! The fault campaign ([`chaos`], binary `chaos`) and the benchmarks
//! ([`bench`], binaries `bench-stack`, `bench-lease`, `bench-js7`, and the
//! benchmarks' Kubernetes Lease baseline `baseline-labeler`), built on the
//! harness (`joc-ha-tests`). Nothing in the harness depends on this crate.

pub mod bench;
pub mod chaos;
