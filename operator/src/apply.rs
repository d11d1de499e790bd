//! Server-side apply of the desired objects with one field manager, and
//! deletion of the objects a cluster should no longer have. An object of a
//! desired name that another controller (or nobody) owns is never applied
//! or deleted: a forced apply would take its fields, and the owner
//! reference would let deleting this cluster garbage-collect it (issue 19,
//! case 2). The conflict is returned, and nothing is applied at all.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    FIELD_MANAGER_OPERATOR, api_server_statefulset_name, api_service_name,
    legacy_api_server_deployment_name, legacy_joc_config_map_name, members_statefulset_name,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::Desired;
use crate::error::{Error, Result};

/// An existing object that has a name this cluster needs but is not this
/// cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    /// Its controller, e.g. `JocCluster joc`; `None` when it has none.
    pub owner: Option<String>,
}

impl Conflict {
    pub fn message(&self, cluster: &str) -> String {
        let owner = match &self.owner {
            Some(owner) => format!("belongs to {owner}"),
            None => "was not created for this JocCluster (it has no controller)".to_owned(),
        };
        format!(
            "{} {} already exists and {owner}; JocCluster {cluster} needs that name and leaves the object alone, so nothing of {cluster} is applied. Rename this JocCluster (delete it and create it under another name), or remove the other object",
            self.kind, self.name
        )
    }
}

/// Whose an existing object is, seen from the JocCluster of `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    /// Another controller's (`Some("<kind> <name>")`), or nobody's.
    Foreign(Option<String>),
}

/// Pure: an object is this cluster's only when its controller owner
/// reference carries the cluster's uid.
pub fn ownership(meta: &ObjectMeta, uid: &str) -> Ownership {
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.uid == uid => Ownership::Ours,
        Some(o) => Ownership::Foreign(Some(format!("{} {}", o.kind, o.name))),
        None => Ownership::Foreign(None),
    }
}

/// Applies every desired object and deletes the ones that must not exist;
/// returns the conflicts instead when any desired name is taken.
/// Server-side apply is idempotent: an unchanged object costs one request.
pub async fn apply_all(
    client: &Client,
    cluster: &JocCluster,
    desired: &Desired,
) -> Result<Vec<Conflict>> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let uid = cluster
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;

    // Check every name first, so that a conflict changes nothing.
    let mut conflicts = Vec::new();
    let rbac = &desired.sidecar_rbac;
    conflicts.extend(foreign(client, &namespace, &uid, &rbac.service_account).await?);
    conflicts.extend(foreign(client, &namespace, &uid, &rbac.role).await?);
    conflicts.extend(foreign(client, &namespace, &uid, &rbac.role_binding).await?);
    for service in &desired.services {
        conflicts.extend(foreign(client, &namespace, &uid, service).await?);
    }
    conflicts.extend(foreign(client, &namespace, &uid, &desired.members).await?);
    if let Some(statefulset) = &desired.api_servers {
        conflicts.extend(foreign(client, &namespace, &uid, statefulset).await?);
    }
    if let Some(pdb) = &desired.pod_disruption_budget {
        conflicts.extend(foreign(client, &namespace, &uid, pdb).await?);
    }
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }

    apply(client, &namespace, &rbac.service_account).await?;
    apply(client, &namespace, &rbac.role).await?;
    apply(client, &namespace, &rbac.role_binding).await?;
    for service in &desired.services {
        apply(client, &namespace, service).await?;
    }
    let name = cluster.name_any();
    apply(client, &namespace, &desired.members).await?;

    // Objects of earlier joc-ha releases: the API servers' Deployment (now a
    // StatefulSet of the same name, which stable JOC orderings need) and the
    // ConfigMap of JOC's settings (now init-container arguments).
    delete_owned::<Deployment>(
        client,
        &namespace,
        &uid,
        &legacy_api_server_deployment_name(&name),
    )
    .await?;
    delete_owned::<ConfigMap>(client, &namespace, &uid, &legacy_joc_config_map_name(&name)).await?;
    // `<name>-api` may be another cluster's StatefulSet and active Service
    // (a JocCluster named `<name>-api`): delete only our own.
    match &desired.api_servers {
        Some(statefulset) => apply(client, &namespace, statefulset).await?,
        None => {
            delete_owned::<StatefulSet>(
                client,
                &namespace,
                &uid,
                &api_server_statefulset_name(&name),
            )
            .await?;
            delete_owned::<Service>(client, &namespace, &uid, &api_service_name(&name)).await?;
        }
    }
    match &desired.pod_disruption_budget {
        Some(pdb) => apply(client, &namespace, pdb).await?,
        None => {
            delete_owned::<PodDisruptionBudget>(
                client,
                &namespace,
                &uid,
                &members_statefulset_name(&name),
            )
            .await?
        }
    }
    Ok(Vec::new())
}

/// The namespaced kinds the operator checks, applies and deletes.
trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + DeserializeOwned
    + Clone
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
{
}

/// The name every desired object carries.
fn name_of<K: Resource>(object: &K) -> Result<String> {
    object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.name"))
}

/// Whose the existing object `name` is, seen from the JocCluster of `uid`;
/// `None` when there is no such object. The one owner check before an apply
/// and before a delete.
async fn existing_ownership<K: Namespaced>(
    api: &Api<K>,
    name: &str,
    uid: &str,
) -> Result<Option<Ownership>> {
    Ok(api
        .get_metadata_opt(name)
        .await?
        .map(|existing| ownership(&existing.metadata, uid)))
}

/// The conflict, if an object of `object`'s name exists and is not ours.
async fn foreign<K: Namespaced>(
    client: &Client,
    namespace: &str,
    uid: &str,
    object: &K,
) -> Result<Option<Conflict>> {
    let name = name_of(object)?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(match existing_ownership(&api, &name, uid).await? {
        None | Some(Ownership::Ours) => None,
        Some(Ownership::Foreign(owner)) => Some(Conflict {
            kind: K::kind(&()).into_owned(),
            name,
            owner,
        }),
    })
}

async fn apply<K: Namespaced + Serialize>(
    client: &Client,
    namespace: &str,
    object: &K,
) -> Result<()> {
    let name = name_of(object)?;
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
async fn delete<K: Namespaced>(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes an object only if the JocCluster of `uid` owns it (a user's own
/// object of the same name stays).
async fn delete_owned<K: Namespaced>(
    client: &Client,
    namespace: &str,
    uid: &str,
    name: &str,
) -> Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if existing_ownership(&api, name, uid).await? == Some(Ownership::Ours) {
        delete::<K>(client, namespace, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(owners: &[(&str, &str, Option<bool>)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(
                owners
                    .iter()
                    .map(|(name, uid, controller)| OwnerReference {
                        api_version: "joc-ha.dev/v1alpha1".into(),
                        kind: "JocCluster".into(),
                        name: (*name).into(),
                        uid: (*uid).into(),
                        controller: *controller,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_this_cluster_controls_are_ours() {
        let joc = Some("JocCluster joc".to_owned());
        let cases: Vec<(ObjectMeta, Ownership)> = vec![
            (meta(&[("joc", "u1", Some(true))]), Ownership::Ours),
            (
                meta(&[("joc", "u2", Some(true))]),
                Ownership::Foreign(joc.clone()),
            ),
            // Same name, another uid: a deleted and recreated cluster's
            // leftovers are not taken either.
            (
                meta(&[("joc-members", "u2", Some(true))]),
                Ownership::Foreign(Some("JocCluster joc-members".into())),
            ),
            // A mere (non-controller) reference to us does not make it ours.
            (meta(&[("joc", "u1", None)]), Ownership::Foreign(None)),
            (
                meta(&[("joc", "u1", Some(false)), ("joc", "u2", Some(true))]),
                Ownership::Foreign(joc),
            ),
            (ObjectMeta::default(), Ownership::Foreign(None)),
        ];
        for (meta, want) in cases {
            assert_eq!(ownership(&meta, "u1"), want, "{meta:?}");
        }
    }

    #[test]
    fn a_conflict_names_the_object_its_owner_and_what_to_do() {
        let conflict = Conflict {
            kind: "Service".into(),
            name: "joc-members".into(),
            owner: Some("JocCluster joc".into()),
        };
        let message = conflict.message("joc-members");
        assert!(
            message.starts_with("Service joc-members already exists and belongs to JocCluster joc"),
            "{message}"
        );
        assert!(message.contains("Rename this JocCluster"), "{message}");
        let unowned = Conflict {
            owner: None,
            ..conflict
        };
        assert!(unowned.message("x").contains("has no controller"));
    }
}
