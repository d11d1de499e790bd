//! Server-side apply of the desired objects with one field manager, and
//! deletion of the objects a cluster should no longer have.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    FIELD_MANAGER_OPERATOR, api_server_statefulset_name, api_service_name,
    legacy_api_server_deployment_name, legacy_joc_config_map_name, members_statefulset_name,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::Desired;
use crate::error::{Error, Result};

/// Applies every desired object and deletes the ones that must not exist.
/// Server-side apply is idempotent: an unchanged object costs one request.
pub async fn apply_all(client: &Client, cluster: &JocCluster, desired: &Desired) -> Result<()> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    apply(client, &namespace, &desired.sidecar_rbac.service_account).await?;
    apply(client, &namespace, &desired.sidecar_rbac.role).await?;
    apply(client, &namespace, &desired.sidecar_rbac.role_binding).await?;
    for service in &desired.services {
        apply(client, &namespace, service).await?;
    }
    let name = cluster.name_any();
    apply(client, &namespace, &desired.members).await?;

    // Objects of earlier joc-ha releases: the API servers' Deployment (now a
    // StatefulSet of the same name, which stable JOC orderings need) and the
    // ConfigMap of JOC's settings (now init-container arguments).
    delete_owned::<Deployment>(client, cluster, &legacy_api_server_deployment_name(&name)).await?;
    delete_owned::<ConfigMap>(client, cluster, &legacy_joc_config_map_name(&name)).await?;
    match &desired.api_servers {
        Some(statefulset) => apply(client, &namespace, statefulset).await?,
        None => {
            delete::<StatefulSet>(client, &namespace, &api_server_statefulset_name(&name)).await?;
            delete::<Service>(client, &namespace, &api_service_name(&name)).await?;
        }
    }
    match &desired.pod_disruption_budget {
        Some(pdb) => apply(client, &namespace, pdb).await?,
        None => {
            delete::<PodDisruptionBudget>(client, &namespace, &members_statefulset_name(&name))
                .await?
        }
    }
    Ok(())
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut value = serde_json::to_value(object).map_err(|e| Error::Serialize("object", e))?;
    // Server-side apply needs apiVersion and kind in the body.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    let params = PatchParams::apply(FIELD_MANAGER_OPERATOR).force();
    api.patch(&name, &params, &Patch::Apply(value)).await?;
    Ok(())
}

/// Deletes an object if it exists.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes an object only if this JocCluster owns it (a user's own object
/// of the same name stays).
async fn delete_owned<K>(client: &Client, cluster: &JocCluster, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let Some(object) = api.get_opt(name).await? else {
        return Ok(());
    };
    let uid = cluster.uid();
    let owned = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true));
    if owned {
        delete::<K>(client, &namespace, name).await?;
    }
    Ok(())
}
