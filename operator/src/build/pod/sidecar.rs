//! The sidecar container.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{pod, secret_key, sidecar_env};
use joc_ha_crds::v1alpha1::{DatabaseKind, LogFormat, WorkloadMode};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe,
    SecretKeySelector, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    BuildContext, JOC_GROUP_ID, JOC_USER_ID, data_directory, database_ca_mount, database_ca_secret,
    env_value, restricted_security_context,
};

pub(super) fn sidecar_image(cluster: &JocCluster, ctx: &BuildContext) -> String {
    cluster
        .spec
        .sidecar
        .image
        .clone()
        .unwrap_or_else(|| ctx.sidecar_image.clone())
}

/// The database settings from the Secret, as the sidecar reads them (the
/// init container of js7 pods reads the same).
pub(super) fn database_env(cluster: &JocCluster) -> Vec<EnvVar> {
    let spec = &cluster.spec;
    let secret = &spec.database.secret_ref.name;
    let from_secret = |key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret.clone(),
            key: key.to_owned(),
            // The Secret holds either `url` or the parts; the sidecar says
            // which are missing.
            optional: Some(true),
        }),
        ..Default::default()
    };
    let value = env_value;
    let sourced = |name: &str, source: EnvVarSource| EnvVar {
        name: name.to_owned(),
        value_from: Some(source),
        ..Default::default()
    };
    let database_type = match spec.database.kind {
        DatabaseKind::Postgresql => "postgresql",
        DatabaseKind::Mysql => "mysql",
        DatabaseKind::Mariadb => "mariadb",
        DatabaseKind::Sqlite => "sqlite",
    };
    let mut env = vec![
        value(sidecar_env::DATABASE_TYPE, database_type.to_owned()),
        sourced(sidecar_env::DATABASE_URL, from_secret(secret_key::URL)),
        sourced(sidecar_env::DATABASE_HOST, from_secret(secret_key::HOST)),
        sourced(sidecar_env::DATABASE_PORT, from_secret(secret_key::PORT)),
        sourced(
            sidecar_env::DATABASE_NAME,
            from_secret(secret_key::DATABASE),
        ),
        sourced(sidecar_env::DATABASE_USER, from_secret(secret_key::USER)),
        sourced(
            sidecar_env::DATABASE_PASSWORD,
            from_secret(secret_key::PASSWORD),
        ),
    ];
    if let Some(tls) = &spec.database.tls {
        let mode = serde_json::to_value(tls.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        env.push(value(sidecar_env::DATABASE_TLS_MODE, mode));
    }
    if database_ca_secret(cluster).is_some() {
        env.push(value(
            sidecar_env::DATABASE_CA_FILE,
            format!("{}/{}", pod::DATABASE_CA_DIR, pod::DATABASE_CA_KEY),
        ));
    }
    env
}

pub(super) fn sidecar_container(cluster: &JocCluster, ctx: &BuildContext) -> Container {
    let spec = &cluster.spec;
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sourced = |name: &str, source: EnvVarSource| EnvVar {
        name: name.to_owned(),
        value_from: Some(source),
        ..Default::default()
    };
    let value = env_value;
    let mut env = vec![
        sourced(sidecar_env::POD_NAME, field("metadata.name")),
        sourced(sidecar_env::NAMESPACE, field("metadata.namespace")),
        value(sidecar_env::CLUSTER, cluster.name_any()),
    ];
    env.extend(database_env(cluster));
    env.extend([
        value(sidecar_env::LEASE_TTL, spec.lease.ttl.clone()),
        value(
            sidecar_env::RENEW_INTERVAL,
            spec.lease.renew_interval.clone(),
        ),
        value(sidecar_env::ROLE_DIR, pod::ROLE_DIR.to_owned()),
        value(
            sidecar_env::HTTP_ADDR,
            format!("0.0.0.0:{}", pod::SIDECAR_PORT),
        ),
        // /role and /prestop: loopback only, where the cockpit's preStop
        // hook (`joc-ha-sidecar prestop`, default address) calls.
        value(
            sidecar_env::LOCAL_ADDR,
            format!("127.0.0.1:{}", pod::SIDECAR_LOCAL_PORT),
        ),
    ]);
    match spec.workload.mode {
        WorkloadMode::Generic => env.push(value(sidecar_env::WORKLOAD, "generic".to_owned())),
        WorkloadMode::Js7 => {
            env.push(value(sidecar_env::WORKLOAD, "js7".to_owned()));
            env.push(value(
                sidecar_env::JOC_DATA_DIR,
                spec.workload.joc_data_directory().to_owned(),
            ));
            // Without a license a switch target never starts JOC's services
            // (docs/joc-facts.md 10): the sidecar must not ask JOC to switch.
            env.push(value(
                sidecar_env::JOC_LICENSED,
                spec.license.is_some().to_string(),
            ));
            // The JVM's `-Djetty.base=`: JOC's data directory is its JETTY_BASE.
            env.push(value(sidecar_env::JOC_JETTY_BASE, data_directory(cluster)));
            // Invalid durations are refused by the API server; the sidecar
            // falls back to JOC's defaults if one slipped through.
            if let Ok(timings) = spec.workload.joc_timings(&spec.lease) {
                env.push(value(
                    sidecar_env::JOC_POLLING_INTERVAL,
                    timings.polling_interval_s.to_string(),
                ));
                env.push(value(
                    sidecar_env::JOC_HEART_BEAT_EXCEEDED_INTERVAL,
                    timings.heart_beat_exceeded_interval_s.to_string(),
                ));
            }
        }
    }
    if let Some(format) = spec.sidecar.log_format {
        let format = match format {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        };
        env.push(value(sidecar_env::LOG_FORMAT, format.to_owned()));
    }
    let mut sidecar_mounts = vec![VolumeMount {
        name: pod::ROLE_VOLUME.to_owned(),
        mount_path: pod::ROLE_DIR.to_owned(),
        ..Default::default()
    }];
    if database_ca_secret(cluster).is_some() {
        sidecar_mounts.push(database_ca_mount());
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(pod::SIDECAR_PORT_NAME.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(2),
        ..Default::default()
    };
    Container {
        name: pod::SIDECAR_CONTAINER.to_owned(),
        image: Some(sidecar_image(cluster, ctx)),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        restart_policy: Some("Always".to_owned()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(pod::SIDECAR_PORT_NAME.to_owned()),
            container_port: pod::SIDECAR_PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(Probe {
            failure_threshold: Some(5),
            ..probe("/healthz")
        }),
        resources: spec.resources.sidecar.clone(),
        volume_mounts: Some(sidecar_mounts),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            // js7: JOC's uid, so that the sidecar may SIGKILL JOC's JVM (a
            // fence) without an added capability, under restricted Pod
            // Security.
            run_as_user: (spec.workload.mode == WorkloadMode::Js7).then_some(JOC_USER_ID),
            run_as_group: (spec.workload.mode == WorkloadMode::Js7).then_some(JOC_GROUP_ID),
            ..restricted_security_context()
        }),
        ..Default::default()
    }
}
