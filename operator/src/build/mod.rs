//! Pure functions from a JocCluster to the objects it needs, one file per
//! kind. No API calls here: everything is unit-tested without a cluster.

pub mod api_servers;
pub mod labels;
pub mod pdb;
pub mod pod;
pub mod rbac;
pub mod services;
pub mod statefulset;

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::ANNOTATION_SECRET_VERSIONS;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::error::Result;
use rbac::SidecarRbac;

/// What the operator knows beyond the JocCluster itself.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Sidecar image used when the JocCluster names none.
    pub sidecar_image: String,
}

/// Every object a JocCluster should have. `None` marks an object that must
/// not exist (and is deleted if it does).
pub struct Desired {
    pub sidecar_rbac: SidecarRbac,
    pub services: Vec<Service>,
    pub members: StatefulSet,
    /// The StatefulSet `<name>-api`.
    pub api_servers: Option<StatefulSet>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

pub fn desired(cluster: &JocCluster, ctx: &BuildContext) -> Result<Desired> {
    Ok(Desired {
        sidecar_rbac: rbac::sidecar_rbac(cluster)?,
        services: services::services(cluster)?,
        members: statefulset::members_statefulset(cluster, ctx)?,
        api_servers: api_servers::api_server_statefulset(cluster, ctx)?,
        pod_disruption_budget: pdb::pod_disruption_budget(cluster)?,
    })
}

/// Puts the referenced Secrets' versions (see [`ANNOTATION_SECRET_VERSIONS`])
/// on both pod templates, so that a changed Secret rolls the pods.
pub fn stamp_secret_versions(desired: &mut Desired, versions: &str) {
    let templates = std::iter::once(&mut desired.members)
        .chain(desired.api_servers.as_mut())
        .map(|sts| &mut sts.spec.template);
    for template in templates {
        template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_SECRET_VERSIONS.to_owned(), versions.to_owned());
    }
}

/// A JocCluster for the builders' unit tests: a minimal valid spec with
/// `spec` merged in.
#[cfg(test)]
pub(crate) fn test_cluster(spec: serde_json::Value) -> JocCluster {
    let mut object = serde_json::json!({
        "apiVersion": "joc-ha.dev/v1alpha1",
        "kind": "JocCluster",
        "metadata": {"name": "joc", "namespace": "js7", "uid": "1234"},
        "spec": {
            "image": "sosberlin/js7:joc-2-8-1",
            "database": {"type": "postgresql", "secretRef": {"name": "joc-db"}}
        }
    });
    if let (Some(base), Some(extra)) = (object["spec"].as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(object).expect("valid JocCluster")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_versions_go_on_both_pod_templates() {
        let c = cluster(serde_json::json!({"apiServers": 1}));
        let mut d = desired(&c, &ctx()).expect("desired");
        stamp_secret_versions(&mut d, "db=7,license=9");
        let api = d.api_servers.as_ref().expect("api servers");
        for sts in [&d.members, api] {
            let annotations = sts
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .expect("annotations");
            assert_eq!(
                annotations
                    .get(ANNOTATION_SECRET_VERSIONS)
                    .map(String::as_str),
                Some("db=7,license=9")
            );
        }
    }
    use joc_ha_crds::names::{
        LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE, pod as pod_names, sidecar_env,
    };

    fn cluster(spec: serde_json::Value) -> JocCluster {
        test_cluster(spec)
    }

    fn ctx() -> BuildContext {
        BuildContext {
            sidecar_image: "joc-ha-sidecar:test".to_owned(),
        }
    }

    #[test]
    fn members_run_the_sidecar_as_a_native_sidecar() {
        let desired = desired(&cluster(serde_json::json!({"members": 3})), &ctx()).expect("builds");
        let sts = desired.members.spec;
        assert_eq!(sts.replicas, Some(3));
        assert_eq!(sts.service_name.as_deref(), Some("joc-headless"));
        let pod = sts.template.spec.expect("pod spec");
        let init = pod.init_containers.expect("init containers");
        // js7 (default): the sidecar starts first (so it reports a database
        // `joc-config` refuses), then the preStop hook's program is copied,
        // then the image's files are copied and JOC's
        // configuration is written over them.
        let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                pod_names::SIDECAR_CONTAINER,
                pod_names::HOOK_INIT_CONTAINER,
                pod_names::JOC_IMAGE_FILES_INIT_CONTAINER,
                pod_names::JOC_CONFIG_INIT_CONTAINER,
            ]
        );
        assert_eq!(init[1].restart_policy, None, "runs to completion");
        assert_eq!(init[2].restart_policy, None, "runs to completion");
        let sidecar = &init[0];
        assert_eq!(sidecar.name, pod_names::SIDECAR_CONTAINER);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("joc-ha-sidecar:test"));
        let env = sidecar.env.as_ref().expect("env");
        let url = env
            .iter()
            .find(|e| e.name == sidecar_env::DATABASE_URL)
            .expect("url env");
        let secret = url
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("from secret");
        assert_eq!(secret.name, "joc-db");
        assert!(
            env.iter().all(|e| e.value.as_deref() != Some("password")),
            "credentials come from the Secret, never inline"
        );
        let cockpit = &pod.containers[0];
        assert_eq!(cockpit.image.as_deref(), Some("sosberlin/js7:joc-2-8-1"));
        assert!(
            cockpit
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .is_some()
        );
    }

    #[test]
    fn the_active_service_selects_only_the_active_member() {
        let desired = desired(&cluster(serde_json::json!({})), &ctx()).expect("builds");
        let active = desired
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("joc"))
            .expect("active service");
        let selector = active
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .expect("selector");
        assert_eq!(selector.get(LABEL_ROLE).map(String::as_str), Some("active"));
        assert_eq!(
            selector.get(LABEL_COMPONENT).map(String::as_str),
            Some("member")
        );
        assert_eq!(selector.get(LABEL_CLUSTER).map(String::as_str), Some("joc"));
        let names: Vec<_> = desired
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            ["joc", "joc-members", "joc-headless"],
            "no -api without API servers"
        );
    }

    #[test]
    fn api_servers_get_a_statefulset_and_service_without_sidecar() {
        let desired =
            desired(&cluster(serde_json::json!({"apiServers": 2})), &ctx()).expect("builds");
        let statefulset = desired.api_servers.expect("statefulset");
        assert_eq!(statefulset.metadata.name.as_deref(), Some("joc-api"));
        assert_eq!(statefulset.spec.replicas, Some(2));
        assert_eq!(statefulset.spec.service_name.as_deref(), Some("joc-api"));
        let pod = statefulset.spec.template.spec.expect("pod");
        let init: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            init,
            [
                pod_names::JOC_IMAGE_FILES_INIT_CONTAINER,
                pod_names::JOC_CONFIG_INIT_CONTAINER
            ],
            "API servers take no part in the lease: no sidecar"
        );
        let args = pod
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == pod_names::JOC_CONFIG_INIT_CONTAINER)
            .and_then(|c| c.args.clone())
            .unwrap_or_default();
        assert!(
            args.iter().any(|a| a == "--api-server"),
            "API servers are installed as API servers: {args:?}"
        );
        let offset = args
            .iter()
            .position(|a| a == "--ordering-offset")
            .and_then(|i| args.get(i + 1));
        assert_eq!(offset.map(String::as_str), Some("50"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(
            desired
                .services
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some("joc-api"))
        );
    }

    #[test]
    fn every_child_is_owned_by_the_cluster() {
        let desired =
            desired(&cluster(serde_json::json!({"apiServers": 1})), &ctx()).expect("builds");
        let mut metas = vec![
            &desired.members.metadata,
            &desired.sidecar_rbac.service_account.metadata,
            &desired.sidecar_rbac.role.metadata,
            &desired.sidecar_rbac.role_binding.metadata,
        ];
        metas.extend(desired.services.iter().map(|s| &s.metadata));
        metas.extend(desired.api_servers.iter().map(|d| &d.metadata));
        metas.extend(desired.pod_disruption_budget.iter().map(|p| &p.metadata));
        assert_eq!(metas.len(), 10, "every kind is checked");
        for meta in metas {
            let owners = meta.owner_references.as_ref().expect("owner");
            assert_eq!(owners[0].uid, "1234");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("js7"));
        }
    }

    #[test]
    fn pod_disruption_budget_defaults_on_for_several_members() {
        let one = desired(&cluster(serde_json::json!({"members": 1})), &ctx()).expect("builds");
        assert!(one.pod_disruption_budget.is_none());
        let two = desired(&cluster(serde_json::json!({"members": 2})), &ctx()).expect("builds");
        assert!(two.pod_disruption_budget.is_some());
        let off = desired(
            &cluster(serde_json::json!({"members": 3, "podDisruptionBudget": {"enabled": false}})),
            &ctx(),
        )
        .expect("builds");
        assert!(off.pod_disruption_budget.is_none());
    }

    #[test]
    fn members_spread_over_nodes_preferred_or_required() {
        let anti_affinity = |spec: serde_json::Value| {
            desired_members_pod(spec)
                .affinity
                .expect("affinity")
                .pod_anti_affinity
                .expect("anti")
        };
        let preferred = anti_affinity(serde_json::json!({}));
        assert!(
            preferred
                .preferred_during_scheduling_ignored_during_execution
                .is_some()
        );
        let required =
            anti_affinity(serde_json::json!({"scheduling": {"spreadMembers": "required"}}));
        assert!(
            required
                .required_during_scheduling_ignored_during_execution
                .is_some()
        );
    }

    #[test]
    fn the_cockpit_runs_as_a_numeric_non_root_user() {
        let desired = desired(
            &cluster(serde_json::json!({"apiServers": 1, "logVolume": {"size": "1Gi"}})),
            &ctx(),
        )
        .expect("builds");
        let api_pod = desired.api_servers.expect("deployment").spec.template.spec;
        for pod in [desired.members.spec.template.spec, api_pod] {
            let pod = pod.expect("pod");
            let security = pod.containers[0]
                .security_context
                .clone()
                .expect("security");
            assert_eq!(security.run_as_user, Some(pod::JOC_USER_ID));
            assert_ne!(security.run_as_user, Some(0));
            assert_eq!(security.run_as_non_root, Some(true));
        }
        let members = desired_members_pod(serde_json::json!({"logVolume": {"size": "1Gi"}}));
        assert_eq!(
            members.security_context.and_then(|s| s.fs_group),
            Some(pod::JOC_GROUP_ID),
            "the log volume must be writable by JOC's group"
        );
        let members = desired_members_pod(serde_json::json!({}));
        assert_eq!(members.security_context.and_then(|s| s.fs_group), None);
    }

    fn desired_members_pod(spec: serde_json::Value) -> k8s_openapi::api::core::v1::PodSpec {
        desired(&cluster(spec), &ctx())
            .expect("builds")
            .members
            .spec
            .template
            .spec
            .expect("pod")
    }

    #[test]
    fn a_cluster_without_uid_is_an_error_not_a_panic() {
        let mut c = cluster(serde_json::json!({}));
        c.metadata.uid = None;
        assert!(desired(&c, &ctx()).is_err());
    }
}
