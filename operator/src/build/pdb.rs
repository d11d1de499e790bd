//! The members' PodDisruptionBudget: one member down at a time, so a drain
//! never takes the active member and its only ready standby together.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::members_statefulset_name;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{Component, child_meta, label_selector, selector_labels};
use crate::error::Result;

/// `None` when disabled, which is the default for a single member (a budget
/// of one unavailable pod would block every drain of its node forever).
pub fn pod_disruption_budget(cluster: &JocCluster) -> Result<Option<PodDisruptionBudget>> {
    let enabled = cluster
        .spec
        .pod_disruption_budget
        .enabled
        .unwrap_or(cluster.spec.members > 1);
    if !enabled {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(cluster, members_statefulset_name(&cluster.name_any()))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(selector_labels(cluster, Component::Member))),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
