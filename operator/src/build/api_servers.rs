//! The API-server instances: JOC pods outside cluster management (no
//! sidecar), as a StatefulSet `<name>-api` so that each has a stable name and
//! with it a stable JOC `ordering` (50 + ordinal; JOC refuses a second live
//! instance with the same ordering, docs/joc-facts.md 2).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{api_server_statefulset_name, api_service_name};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, child_meta, label_selector, selector_labels};
use super::pod::pod_template;
use crate::error::Result;

/// `None` when the cluster asks for no API servers.
pub fn api_server_statefulset(
    cluster: &JocCluster,
    ctx: &BuildContext,
) -> Result<Option<StatefulSet>> {
    if cluster.spec.api_servers == 0 {
        return Ok(None);
    }
    let name = cluster.name_any();
    Ok(Some(StatefulSet {
        metadata: child_meta(cluster, api_server_statefulset_name(&name))?,
        spec: StatefulSetSpec {
            replicas: Some(cluster.spec.api_servers),
            // The Service `<name>-api` governs the pods' names.
            service_name: Some(api_service_name(&name)),
            selector: label_selector(selector_labels(cluster, Component::ApiServer)),
            // Peers, no start order; the default RollingUpdate replaces one
            // at a time, highest ordinal first.
            pod_management_policy: Some("Parallel".to_owned()),
            template: pod_template(cluster, Component::ApiServer, ctx)?,
            ..Default::default()
        },
        ..Default::default()
    }))
}
