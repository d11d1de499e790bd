//! The API-server instances: plain JOC pods outside cluster management, so
//! a Deployment without the sidecar.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::api_server_deployment_name;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, child_meta, label_selector, selector_labels};
use super::pod::pod_template;
use crate::error::Result;

/// `None` when the cluster asks for no API servers.
pub fn api_server_deployment(
    cluster: &JocCluster,
    ctx: &BuildContext,
) -> Result<Option<Deployment>> {
    if cluster.spec.api_servers == 0 {
        return Ok(None);
    }
    Ok(Some(Deployment {
        metadata: child_meta(cluster, api_server_deployment_name(&cluster.name_any()))?,
        spec: DeploymentSpec {
            replicas: Some(cluster.spec.api_servers),
            selector: label_selector(selector_labels(cluster, Component::ApiServer)),
            template: pod_template(cluster, Component::ApiServer, ctx),
            ..Default::default()
        },
        ..Default::default()
    }))
}
