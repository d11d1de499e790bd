//! The pod template shared by members (cockpit + sidecar) and API servers
//! (cockpit only).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    joc_config_map_name, pod, secret_key, sidecar_env, sidecar_service_account_name,
};
use joc_ha_crds::v1alpha1::{DatabaseKind, LogFormat, SpreadMode, WorkloadMode};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, TCPSocketAction,
    Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, label_selector, pod_labels, selector_labels};

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
) -> PodTemplateSpec {
    let spec = &cluster.spec;
    let mut volumes = vec![];
    let mut init_containers = vec![];
    let mut cockpit = cockpit_container(cluster, component);

    if component == Component::Member {
        volumes.push(Volume {
            name: pod::ROLE_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if super::config_map::writes_joc_config(cluster) {
        // js7: JOC's configuration files, written before JOC starts.
        volumes.push(Volume {
            name: pod::CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: joc_config_map_name(&cluster.name_any()),
                ..Default::default()
            }),
            ..Default::default()
        });
        volumes.push(Volume {
            name: pod::RENDERED_CONFIG_VOLUME.to_owned(),
            // The rendered hibernate.cfg.xml holds the password: keep it in memory.
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        });
        init_containers.push(joc_config_container(cluster, component, ctx));
        let mounts = cockpit.volume_mounts.get_or_insert_with(Vec::new);
        for file in [pod::JOC_PROPERTIES, pod::HIBERNATE_CFG] {
            mounts.push(VolumeMount {
                name: pod::RENDERED_CONFIG_VOLUME.to_owned(),
                mount_path: format!("{}/{file}", pod::JOC_RESOURCES_DIR),
                sub_path: Some(file.to_owned()),
                ..Default::default()
            });
        }
    }
    if component == Component::Member {
        // A native sidecar: it starts before and stops after the cockpit.
        init_containers.push(sidecar_container(cluster, ctx));
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
        let mounts = cockpit.volume_mounts.get_or_insert_with(Vec::new);
        for file in ["joc.properties", "hibernate.cfg.xml"] {
            mounts.push(VolumeMount {
                name: pod::CONFIG_VOLUME.to_owned(),
                mount_path: format!("{}/{file}", pod::JOC_RESOURCES_DIR),
                sub_path: Some(file.to_owned()),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }

    PodTemplateSpec {
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

fn cockpit_container(cluster: &JocCluster, component: Component) -> Container {
    let spec = &cluster.spec;
    let mut ports = vec![ContainerPort {
        name: Some(pod::HTTP_PORT_NAME.to_owned()),
        container_port: spec.ports.http,
        ..Default::default()
    }];
    if let Some(https) = spec.ports.https {
        ports.push(ContainerPort {
            name: Some(pod::HTTPS_PORT_NAME.to_owned()),
            container_port: https,
            ..Default::default()
        });
    }
    let mut container = Container {
        name: pod::COCKPIT_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(pod::HTTP_PORT_NAME.to_owned()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: spec.resources.cockpit.clone(),
        // JOC writes below /var/sos-berlin.com, so its root filesystem stays
        // writable (documented exception to the restricted profile's advice).
        // The kubelet can enforce runAsNonRoot only for a numeric user, and
        // the sosberlin/js7 images start as root unless told otherwise (their
        // entrypoint then switches to `jobscheduler`); so the cockpit runs as
        // that account's ids from the start: uid 1001, group 0, which the
        // image's files are writable by. Nothing else of the restricted
        // profile needs an exception.
        security_context: Some(SecurityContext {
            run_as_user: Some(JOC_USER_ID),
            run_as_group: Some(JOC_GROUP_ID),
            ..restricted_security_context()
        }),
        ..Default::default()
    };
    if component == Component::Member {
        container.volume_mounts = Some(vec![VolumeMount {
            name: pod::ROLE_VOLUME.to_owned(),
            mount_path: pod::ROLE_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]);
        // Hand the lease over before JOC stops, so a deleted active pod
        // leaves the Service before it stops answering.
        container.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(HTTPGetAction {
                    path: Some("/prestop".to_owned()),
                    port: IntOrString::Int(pod::SIDECAR_PORT),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    container
}

/// js7: writes `hibernate.cfg.xml` from the database Secret and copies the
/// operator's `joc.properties` for this kind of pod, then exits. Runs as
/// JOC's user so that JOC can read the owner-only file.
fn joc_config_container(
    cluster: &JocCluster,
    component: Component,
    ctx: &BuildContext,
) -> Container {
    let properties = match component {
        Component::Member => pod::JOC_PROPERTIES,
        Component::ApiServer => pod::API_SERVER_JOC_PROPERTIES,
    };
    Container {
        name: pod::JOC_CONFIG_INIT_CONTAINER.to_owned(),
        image: Some(sidecar_image(cluster, ctx)),
        image_pull_policy: cluster
            .spec
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "render-joc-config".to_owned(),
            "--properties".to_owned(),
            format!("{}/{properties}", pod::TEMPLATE_CONFIG_DIR),
            "--out-dir".to_owned(),
            pod::RENDERED_CONFIG_DIR.to_owned(),
        ]),
        env: Some(database_env(cluster)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: pod::CONFIG_VOLUME.to_owned(),
                mount_path: pod::TEMPLATE_CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: pod::RENDERED_CONFIG_VOLUME.to_owned(),
                mount_path: pod::RENDERED_CONFIG_DIR.to_owned(),
                ..Default::default()
            },
        ]),
        security_context: Some(SecurityContext {
            run_as_user: Some(JOC_USER_ID),
            run_as_group: Some(JOC_GROUP_ID),
            read_only_root_filesystem: Some(true),
            ..restricted_security_context()
        }),
        ..Default::default()
    }
}

fn sidecar_image(cluster: &JocCluster, ctx: &BuildContext) -> String {
    cluster
        .spec
        .sidecar
        .image
        .clone()
        .unwrap_or_else(|| ctx.sidecar_image.clone())
}

/// The database settings from the Secret, as the sidecar reads them (the
/// init container of js7 pods reads the same).
fn database_env(cluster: &JocCluster) -> Vec<EnvVar> {
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
    env
}

fn env_value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn sidecar_container(cluster: &JocCluster, ctx: &BuildContext) -> Container {
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
    ]);
    match spec.workload.mode {
        WorkloadMode::Generic => env.push(value(sidecar_env::WORKLOAD, "generic".to_owned())),
        WorkloadMode::Js7 => {
            env.push(value(sidecar_env::WORKLOAD, "js7".to_owned()));
            env.push(value(
                sidecar_env::JOC_DATA_DIR,
                spec.workload.joc_data_directory().to_owned(),
            ));
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
        volume_mounts: Some(vec![VolumeMount {
            name: pod::ROLE_VOLUME.to_owned(),
            mount_path: pod::ROLE_DIR.to_owned(),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..restricted_security_context()
        }),
        ..Default::default()
    }
}
