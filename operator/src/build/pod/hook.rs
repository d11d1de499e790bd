//! The cockpit's preStop hook: an init container that puts the sidecar's
//! executable where the cockpit container can run it, and the in-memory
//! volume between them.
//!
//! The sidecar serves `/prestop` on loopback only (README "What joc-ha
//! refuses, and why", case 1), and a kubelet runs an `httpGet` hook against
//! the pod IP; so the hook is an `exec` in the cockpit container, the one
//! whose stop it delays. The cockpit image (SOS's, or the user's) has no
//! HTTP client we may rely on: the hook brings its own program.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::pod;
use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, ExecAction, LifecycleHandler, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::sidecar::sidecar_image;
use super::{BuildContext, JOC_GROUP_ID, JOC_USER_ID, restricted_security_context};

/// The copy of the sidecar's executable, as the cockpit sees it.
pub fn hook_program() -> String {
    format!("{}/{}", pod::HOOK_BIN_DIR, pod::HOOK_BIN)
}

/// `joc-ha-sidecar prestop`, run in the cockpit container.
pub(super) fn pre_stop_hook() -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(vec![hook_program(), "prestop".to_owned()]),
        }),
        ..Default::default()
    }
}

/// In memory, so nothing of it reaches the node's disk; its size is
/// bounded (it counts against the pod's memory).
pub(super) fn hook_volume() -> Volume {
    Volume {
        name: pod::HOOK_BIN_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity(pod::HOOK_BIN_SIZE_LIMIT.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The cockpit's mount: read-only, so the cockpit cannot change the
/// program its own preStop hook runs for the next start.
pub(super) fn hook_mount() -> VolumeMount {
    VolumeMount {
        name: pod::HOOK_BIN_VOLUME.to_owned(),
        mount_path: pod::HOOK_BIN_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// `joc-ha-sidecar install-hook`: copies the sidecar image's own
/// executable into the volume, then exits.
pub(super) fn hook_install_container(cluster: &JocCluster, ctx: &BuildContext) -> Container {
    let spec = &cluster.spec;
    let js7 = spec.workload.mode == WorkloadMode::Js7;
    Container {
        name: pod::HOOK_INIT_CONTAINER.to_owned(),
        image: Some(sidecar_image(cluster, ctx)),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "install-hook".to_owned(),
            "--dir".to_owned(),
            pod::HOOK_BIN_DIR.to_owned(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: pod::HOOK_BIN_VOLUME.to_owned(),
            mount_path: pod::HOOK_BIN_DIR.to_owned(),
            ..Default::default()
        }]),
        resources: spec.resources.sidecar.clone(),
        // A failed copy's message shows in `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        // The same user as the sidecar container (js7: JOC's).
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            run_as_user: js7.then_some(JOC_USER_ID),
            run_as_group: js7.then_some(JOC_GROUP_ID),
            ..restricted_security_context()
        }),
        ..Default::default()
    }
}
