//! joc-ha-sidecar: keeps the JOC Cockpit cluster lease in the shared database
//! (the `lease` module, which knows nothing of Kubernetes), turns it into pod
//! labels, and tells the cockpit container its role.
pub mod config;
pub mod http;
pub mod js7;
pub mod kubernetes;
pub mod lease;
pub mod metrics;
pub mod role;
pub mod supervisor;
pub mod switchover;
