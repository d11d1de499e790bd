//! The joc-ha API: the `JocCluster` custom resource (`joc-ha.dev/v1alpha1`)
//! and every label, annotation and condition name the operator and the
//! sidecar use, how their readers judge a pod (`pods`), how they read the
//! fenced members (`fencing`), and the JOC view
//! the js7 sidecars publish on their pods (`joc_view`). Nothing else lives
//! here.

mod database_kind;
pub mod fencing;
pub mod joc_view;
pub mod names;
pub mod pods;
pub mod v1alpha1;

pub use v1alpha1::{JocCluster, JocClusterSpec, JocClusterStatus};

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as `make crds` writes `crds/jocclusters.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&JocCluster::crd())?;
    Ok(format!(
        "# Generated from the Rust types in crds/src by `make crds`; do not edit.\n{yaml}"
    ))
}
