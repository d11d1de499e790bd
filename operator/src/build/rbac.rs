//! ServiceAccount, Role and RoleBinding of the sidecars: only their namespace,
//! only what docs/design.md §2 needs (pods: read and patch labels; their
//! JocCluster: read and patch status; events: create).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{GROUP, sidecar_service_account_name};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::labels::child_meta;
use crate::error::Result;

pub struct SidecarRbac {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

pub fn sidecar_rbac(cluster: &JocCluster) -> Result<SidecarRbac> {
    let cluster_name = cluster.name_any();
    let name = sidecar_service_account_name(&cluster_name);
    let rule = |groups: &[&str], resources: &[&str], names: Option<Vec<String>>, verbs: &[&str]| {
        PolicyRule {
            api_groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            resource_names: names,
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        }
    };
    Ok(SidecarRbac {
        service_account: ServiceAccount {
            metadata: child_meta(cluster, name.clone())?,
            ..Default::default()
        },
        role: Role {
            metadata: child_meta(cluster, name.clone())?,
            rules: Some(vec![
                rule(&[""], &["pods"], None, &["get", "list", "watch", "patch"]),
                rule(
                    &[GROUP],
                    &["jocclusters"],
                    Some(vec![cluster_name.clone()]),
                    &["get", "list", "watch", "patch"],
                ),
                rule(
                    &[GROUP],
                    &["jocclusters/status"],
                    Some(vec![cluster_name]),
                    &["get", "patch"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    None,
                    &["create", "patch"],
                ),
            ]),
        },
        role_binding: RoleBinding {
            metadata: child_meta(cluster, name.clone())?,
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name,
                namespace: cluster.namespace(),
                ..Default::default()
            }]),
        },
    })
}
