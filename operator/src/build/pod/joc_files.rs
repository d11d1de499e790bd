//! js7: the two init containers that prepare JOC's files.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{pod, sidecar_env};
use k8s_openapi::api::core::v1::{Container, EnvVar, SecurityContext, VolumeMount};

use kube::ResourceExt;

use super::sidecar::{database_env, sidecar_image};

use super::{
    BuildContext, Component, Error, JOC_GROUP_ID, JOC_USER_ID, Result, data_directory,
    database_ca_mount, database_ca_secret, env_value, field_ref, read_only_mount,
    restricted_security_context,
};

/// Single-quotes `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// js7: runs the cockpit image itself to copy the files it ships (its
/// `resources/joc`: `joc.properties` with the log configuration, log4j2.xml,
/// start.d; and `joc-settings.properties` with its security level) into the
/// in-memory volumes, which then hide the image's folders in the cockpit.
pub(super) fn image_files_container(cluster: &JocCluster) -> Container {
    let data_dir = data_directory(cluster);
    let resources = shell_quote(&format!("{data_dir}/{}", pod::RESOURCES_SUBDIR));
    let settings = shell_quote(&format!(
        "{data_dir}/{}/{}",
        pod::CLASSES_SUBDIR,
        pod::JOC_SETTINGS_PROPERTIES
    ));
    let script = format!(
        "set -eu\n\
         cp -R {resources}/. {image_resources}/\n\
         if [ -f {settings} ]; then cp {settings} {image_classes}/; fi\n\
         echo \"joc-image-files: copied the image's {resources} and joc-settings.properties\"\n",
        image_resources = pod::IMAGE_RESOURCES_DIR,
        image_classes = pod::IMAGE_CLASSES_DIR,
    );
    Container {
        name: pod::JOC_IMAGE_FILES_INIT_CONTAINER.to_owned(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: cluster
            .spec
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script]),
        volume_mounts: Some(image_volume_mounts()),
        resources: cluster.spec.resources.cockpit.clone(),
        security_context: Some(init_security_context()),
        ..Default::default()
    }
}

/// Both init containers run as JOC's user (JOC reads what they write), on a
/// read-only root filesystem.
fn init_security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(JOC_USER_ID),
        run_as_group: Some(JOC_GROUP_ID),
        read_only_root_filesystem: Some(true),
        ..restricted_security_context()
    }
}

/// The two volumes at the same paths in both init containers.
fn image_volume_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: pod::RESOURCES_VOLUME.to_owned(),
            mount_path: pod::IMAGE_RESOURCES_DIR.to_owned(),
            ..Default::default()
        },
        VolumeMount {
            name: pod::CLASSES_VOLUME.to_owned(),
            mount_path: pod::IMAGE_CLASSES_DIR.to_owned(),
            ..Default::default()
        },
    ]
}

/// js7: the sidecar image's `render-joc-config` merges and writes JOC's
/// files over the image's (see `sidecar/src/js7/config_files/`), then
/// exits. Runs as JOC's user so that JOC can read the owner-only file.
pub(super) fn joc_config_container(
    cluster: &JocCluster,
    component: Component,
    ctx: &BuildContext,
) -> Result<Container> {
    let spec = &cluster.spec;
    let timings = spec
        .workload
        .joc_timings(&spec.lease)
        .map_err(Error::InvalidSpec)?;
    let api_server = component == Component::ApiServer;
    let mut args = vec![
        "render-joc-config".to_owned(),
        // JOC's tables are database-wide: JOC starts only on a database this
        // cluster owns (README "What joc-ha refuses, and why", case 8).
        "--claim-database".to_owned(),
        "--out-dir".to_owned(),
        pod::IMAGE_RESOURCES_DIR.to_owned(),
        "--classes-dir".to_owned(),
        pod::IMAGE_CLASSES_DIR.to_owned(),
    ];
    // Keys from SOS's JocClusterConfiguration and DbInstaller. JOC ignores
    // `cluster_id` since 2.5.4 (it reads `as_api_server`, docs/joc-facts.md 1);
    // it is written so that the entrypoint does not append one.
    let properties = [
        (
            "cluster_id",
            if api_server { "api" } else { "joc" }.to_owned(),
        ),
        (
            "cluster_polling_interval",
            timings.polling_interval_s.to_string(),
        ),
        (
            "cluster_heart_beat_exceeded_interval",
            timings.heart_beat_exceeded_interval_s.to_string(),
        ),
        ("create_db_tables", spec.database.create_tables.to_string()),
    ];
    for (key, value) in properties {
        args.push("--property".to_owned());
        args.push(format!("{key}={value}"));
    }
    args.push("--ordering-offset".to_owned());
    args.push(
        if api_server {
            pod::API_SERVER_ORDERING_OFFSET
        } else {
            0
        }
        .to_string(),
    );
    if api_server {
        args.push("--api-server".to_owned());
    }
    if let Some(level) = spec.security_level {
        args.push("--security-level".to_owned());
        args.push(level.as_str().to_owned());
    }
    let mut mounts = image_volume_mounts();
    if spec.license.is_some() {
        args.push("--license-dir".to_owned());
        args.push(pod::LICENSE_DIR.to_owned());
        mounts.push(read_only_mount(pod::LICENSE_VOLUME, pod::LICENSE_DIR));
    }
    if spec.config.is_some() {
        args.push("--user-config-dir".to_owned());
        args.push(pod::USER_CONFIG_DIR.to_owned());
        mounts.push(read_only_mount(pod::CONFIG_VOLUME, pod::USER_CONFIG_DIR));
    }
    if database_ca_secret(cluster).is_some() {
        mounts.push(database_ca_mount());
    }
    let mut env = vec![
        EnvVar {
            name: sidecar_env::POD_NAME.to_owned(),
            value_from: Some(field_ref("metadata.name")),
            ..Default::default()
        },
        EnvVar {
            name: sidecar_env::NAMESPACE.to_owned(),
            value_from: Some(field_ref("metadata.namespace")),
            ..Default::default()
        },
        env_value(sidecar_env::CLUSTER, cluster.name_any()),
    ];
    env.extend(database_env(cluster));
    Ok(Container {
        name: pod::JOC_CONFIG_INIT_CONTAINER.to_owned(),
        // A refusal's message shows in `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        image: Some(sidecar_image(cluster, ctx)),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: spec.resources.sidecar.clone(),
        security_context: Some(init_security_context()),
        ..Default::default()
    })
}
