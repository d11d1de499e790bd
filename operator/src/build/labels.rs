//! Labels, selectors and owner references shared by every built object.

use std::collections::BTreeMap;

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    APP_NAME, COMPONENT_API_SERVER, COMPONENT_MEMBER, LABEL_APP_INSTANCE, LABEL_APP_MANAGED_BY,
    LABEL_APP_NAME, LABEL_CLUSTER, LABEL_COMPONENT, MANAGED_BY,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::error::Error;

/// Which kind of JOC instance a pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Member,
    ApiServer,
}

impl Component {
    pub fn label_value(self) -> &'static str {
        match self {
            Component::Member => COMPONENT_MEMBER,
            Component::ApiServer => COMPONENT_API_SERVER,
        }
    }
}

/// Labels of every object of a cluster.
pub fn cluster_labels(cluster: &JocCluster) -> BTreeMap<String, String> {
    let name = cluster.name_any();
    BTreeMap::from([
        (LABEL_APP_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_APP_INSTANCE.to_owned(), name.clone()),
        (LABEL_APP_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_CLUSTER.to_owned(), name),
    ])
}

/// Labels that select the pods of one component: stable across upgrades,
/// since a StatefulSet's selector cannot change.
pub fn selector_labels(cluster: &JocCluster, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_owned(), cluster.name_any()),
        (
            LABEL_COMPONENT.to_owned(),
            component.label_value().to_owned(),
        ),
    ])
}

/// Labels of the pods of one component.
pub fn pod_labels(cluster: &JocCluster, component: Component) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(cluster);
    labels.extend(selector_labels(cluster, component));
    labels
}

pub fn label_selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..Default::default()
    }
}

/// Metadata of a child object: namespaced like the cluster, owned by it so
/// deleting the JocCluster deletes the child.
pub fn child_meta(cluster: &JocCluster, name: String) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(cluster_labels(cluster)),
        owner_references: Some(vec![owner_reference(cluster)?]),
        ..Default::default()
    })
}

fn owner_reference(cluster: &JocCluster) -> Result<OwnerReference, Error> {
    cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey(".metadata.uid"))
}
