//! joc-ha-operator: turns JocCluster resources into running JOC Cockpit
//! clusters. The reconcile is a pipeline: read → validate → build the desired
//! objects (`build`, pure) → server-side apply → status.

pub mod apply;
pub mod build;
pub mod controller;
pub mod error;
pub mod metrics;
mod observe;
pub mod rollout;
pub mod secret_refs;
pub mod status;
mod validate;
pub mod version;

pub use error::{Error, Result};
