//! The pod template shared by members (cockpit + sidecar) and API servers
//! (cockpit only).

mod cockpit;
mod hook;
mod joc_files;
mod sidecar;

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{pod, sidecar_service_account_name};
use joc_ha_crds::v1alpha1::{SpreadMode, WorkloadMode};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, label_selector, pod_labels, selector_labels};
use crate::error::{Error, Result};
use cockpit::cockpit_container;
pub use cockpit::{
    DEFAULT_HEAP_PERCENT, JOC_VERSION_PATH, STARTUP_FAILURES, STARTUP_PERIOD_SECONDS, java_options,
};
pub use hook::hook_program;
use hook::{hook_install_container, hook_volume};
use joc_files::{image_files_container, joc_config_container};
use sidecar::sidecar_container;

/// Grace period of member pods: long enough for the preStop hand-over and
/// JOC's own shutdown.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The `jobscheduler` account of the sosberlin/js7 images (their
/// Dockerfile's `JS_USER_ID` default; member of group 0).
pub const JOC_USER_ID: i64 = 1001;
pub const JOC_GROUP_ID: i64 = 0;

pub fn pod_template(
    cluster: &JocCluster,
    component: Component,
    ctx: &BuildContext,
) -> Result<PodTemplateSpec> {
    let spec = &cluster.spec;
    let js7 = spec.workload.mode == WorkloadMode::Js7;
    let mut volumes = vec![];
    let mut init_containers = vec![];
    let mut cockpit = cockpit_container(cluster, component);

    if component == Component::Member {
        volumes.push(memory_volume(pod::ROLE_VOLUME));
        volumes.push(hook_volume());
    }
    if let Some(ca) = database_ca_secret(cluster) {
        volumes.push(Volume {
            name: pod::DATABASE_CA_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.to_owned()),
                items: Some(vec![KeyToPath {
                    key: pod::DATABASE_CA_KEY.to_owned(),
                    path: pod::DATABASE_CA_KEY.to_owned(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(config) = &spec.config {
        volumes.push(Volume {
            name: pod::CONFIG_VOLUME.to_owned(),
            config_map: config
                .config_map_name
                .as_ref()
                .map(|name| ConfigMapVolumeSource {
                    name: name.clone(),
                    ..Default::default()
                }),
            secret: config.secret_name.as_ref().map(|name| SecretVolumeSource {
                secret_name: Some(name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if component == Component::Member {
        // A native sidecar: it starts before and stops after the cockpit.
        // js7: also before `joc-config`, so that when that one refuses a
        // database owned by another cluster, the sidecar (refused too) is
        // running and reports `DatabaseInUse` to the operator.
        init_containers.push(sidecar_container(cluster, ctx));
        // Before the cockpit starts: its preStop hook runs this copy.
        init_containers.push(hook_install_container(cluster, ctx));
    }
    if js7 {
        // The image-files layout (contract with the stand-in, docs/joc-facts.md
        // 1-7): JOC's resources folder and its class-path settings file are
        // in-memory volumes, filled first with the image's own files, then
        // merged with ours by the sidecar image's renderer.
        volumes.push(memory_volume(pod::RESOURCES_VOLUME));
        volumes.push(memory_volume(pod::CLASSES_VOLUME));
        if let Some(license) = &spec.license {
            volumes.push(Volume {
                name: pod::LICENSE_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(license.secret_ref.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        init_containers.push(image_files_container(cluster));
        init_containers.push(joc_config_container(cluster, component, ctx)?);
        let data_dir = data_directory(cluster);
        mounts(&mut cockpit).push(VolumeMount {
            name: pod::RESOURCES_VOLUME.to_owned(),
            mount_path: format!("{data_dir}/{}", pod::RESOURCES_SUBDIR),
            ..Default::default()
        });
        mounts(&mut cockpit).push(VolumeMount {
            name: pod::CLASSES_VOLUME.to_owned(),
            mount_path: format!(
                "{data_dir}/{}/{}",
                pod::CLASSES_SUBDIR,
                pod::JOC_SETTINGS_PROPERTIES
            ),
            sub_path: Some(pod::JOC_SETTINGS_PROPERTIES.to_owned()),
            read_only: Some(true),
            ..Default::default()
        });
    } else if spec.config.is_some() {
        // generic: the user's files as they are.
        for file in [pod::JOC_PROPERTIES, pod::HIBERNATE_CFG] {
            mounts(&mut cockpit).push(VolumeMount {
                name: pod::CONFIG_VOLUME.to_owned(),
                mount_path: format!("{}/{file}", pod::JOC_RESOURCES_DIR),
                sub_path: Some(file.to_owned()),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    if js7 && database_ca_secret(cluster).is_some() {
        // JOC's JDBC driver reads the CA named in hibernate.cfg.xml.
        mounts(&mut cockpit).push(database_ca_mount());
    }

    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(cluster, component)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: (component == Component::Member)
                .then(|| sidecar_service_account_name(&cluster.name_any())),
            // API servers need no API access at all.
            automount_service_account_token: Some(component == Component::Member),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            containers: vec![cockpit],
            volumes: (!volumes.is_empty()).then_some(volumes),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                .then(|| spec.image_pull_secrets.clone()),
            node_selector: (!spec.scheduling.node_selector.is_empty())
                .then(|| spec.scheduling.node_selector.clone()),
            tolerations: (!spec.scheduling.tolerations.is_empty())
                .then(|| spec.scheduling.tolerations.clone()),
            affinity: Some(affinity(cluster, component)),
            // js7 fencing: the sidecar must see JOC's JVM to SIGKILL it
            // (README "Fencing"); only this pod's processes are visible.
            share_process_namespace: (component == Component::Member
                && cluster.spec.workload.mode == WorkloadMode::Js7)
                .then_some(true),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

fn mounts(container: &mut Container) -> &mut Vec<VolumeMount> {
    container.volume_mounts.get_or_insert_with(Vec::new)
}

/// An in-memory emptyDir (the rendered files may hold a credential).
fn memory_volume(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// JETTY_BASE as Java prints it (no trailing `/`).
fn data_directory(cluster: &JocCluster) -> String {
    let dir = cluster.spec.workload.joc_data_directory();
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn database_ca_secret(cluster: &JocCluster) -> Option<&str> {
    cluster
        .spec
        .database
        .tls
        .as_ref()
        .and_then(|tls| tls.ca_secret_ref.as_ref())
        .map(|secret| secret.name.as_str())
}

fn database_ca_mount() -> VolumeMount {
    read_only_mount(pod::DATABASE_CA_VOLUME, pod::DATABASE_CA_DIR)
}

/// Volume `volume` mounted whole, read-only, at `path`.
fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Members spread over distinct nodes ("different servers"): preferred by
/// default, required when asked; an explicit affinity replaces this.
fn affinity(cluster: &JocCluster, component: Component) -> Affinity {
    if let Some(affinity) = &cluster.spec.scheduling.affinity {
        return affinity.clone();
    }
    let term = PodAffinityTerm {
        label_selector: Some(label_selector(selector_labels(cluster, component))),
        topology_key: "kubernetes.io/hostname".to_owned(),
        ..Default::default()
    };
    let anti_affinity = match cluster.spec.scheduling.spread_members {
        SpreadMode::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
        SpreadMode::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
    };
    Affinity {
        pod_anti_affinity: Some(anti_affinity),
        ..Default::default()
    }
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
fn field_ref(path: &str) -> EnvVarSource {
    EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
