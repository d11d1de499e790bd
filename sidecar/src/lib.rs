//! joc-ha-sidecar: keeps the JOC Cockpit cluster lease in the shared database
//! (the `lease` module, which knows nothing of Kubernetes), turns it into pod
//! labels, and tells the cockpit container its role. [`decide`] decides,
//! [`runner`] acts; see `docs/architecture.md`.
pub mod config;
pub mod decide;
pub mod eligibility;
pub mod hook;
pub mod http;
pub mod js7;
pub mod kubernetes;
pub mod lease;
pub mod metrics;
pub mod role;
pub mod runner;
pub mod supervisor;
