//! The pod template shared by members (cockpit + sidecar) and API servers
//! (cockpit only).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{cockpit_env, pod, secret_key, sidecar_env, sidecar_service_account_name};
use joc_ha_crds::v1alpha1::{DatabaseKind, LogFormat, SpreadMode, WorkloadMode};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, label_selector, pod_labels, selector_labels};
use crate::error::{Error, Result};

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

fn cockpit_container(cluster: &JocCluster, component: Component) -> Container {
    let spec = &cluster.spec;
    let js7 = spec.workload.mode == WorkloadMode::Js7;
    // HTTPS is refused by the CRD (ports.https) until joc-ha can give JOC a
    // keystore: only the HTTP port exists.
    let ports = vec![ContainerPort {
        name: Some(pod::HTTP_PORT_NAME.to_owned()),
        container_port: spec.ports.http,
        ..Default::default()
    }];
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
    if js7 {
        container.env = Some(cockpit_env(cluster));
        // GET /joc/api/version answers without a login while JOC's web
        // application is up (SOS's AboutImpl, docs/joc-facts.md 8). The image's
        // entrypoint keeps the container running after the JVM died (fact
        // 3), so only the liveness probe brings a dead JOC back. JOC's start
        // is slow (the full web application, tables created on a fresh
        // database): the startup probe allows 10 minutes before liveness
        // counts.
        let version = |period: i32, failures: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(JOC_VERSION_PATH.to_owned()),
                port: IntOrString::String(pod::HTTP_PORT_NAME.to_owned()),
                ..Default::default()
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(5),
            failure_threshold: Some(failures),
            ..Default::default()
        };
        container.startup_probe = Some(version(STARTUP_PERIOD_SECONDS, STARTUP_FAILURES));
        container.liveness_probe = Some(version(10, 6));
        container.readiness_probe = Some(version(5, 3));
    }
    if component == Component::Member {
        container.volume_mounts = Some(vec![read_only_mount(pod::ROLE_VOLUME, pod::ROLE_DIR)]);
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

/// JOC's unauthenticated version endpoint (probes).
pub const JOC_VERSION_PATH: &str = "/joc/api/version";
/// The startup probe: every 2 s, up to 300 failures (10 minutes). Often,
/// because liveness counts only after it passed: a JOC fenced (README
/// "Fencing") before its first passing startup check would otherwise wait
/// out the whole 10 minutes before the kubelet restarts it.
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
pub const STARTUP_FAILURES: i32 = 300;

/// Share of the cockpit's memory limit given to JOC's heap by default
/// (`-Xmx`): the rest is left to the JVM's metaspace, code cache, threads
/// and the in-memory volumes of the pod.
pub const DEFAULT_HEAP_PERCENT: u64 = 60;

/// The cockpit's environment in js7 mode, for the image's entrypoint
/// (ports, JVM options: docs/joc-facts.md 3) and for JOC (`HOSTNAME`, part of its
/// member id, fact 6; the database credentials that fill the placeholders
/// of `hibernate.cfg.xml`, fact 7).
fn cockpit_env(cluster: &JocCluster) -> Vec<EnvVar> {
    let spec = &cluster.spec;
    let secret = &spec.database.secret_ref.name;
    let mut env = vec![
        env_value(cockpit_env::HTTP_PORT, spec.ports.http.to_string()),
        // Empty: the entrypoint switches the HTTPS listener off.
        env_value(cockpit_env::HTTPS_PORT, String::new()),
    ];
    if let Some(options) = java_options(cluster) {
        env.push(env_value(cockpit_env::JAVA_OPTIONS, options));
    }
    env.push(EnvVar {
        name: cockpit_env::HOSTNAME.to_owned(),
        value_from: Some(field_ref("metadata.name")),
        ..Default::default()
    });
    for (name, key) in [
        (cockpit_env::DBMS_USER, secret_key::USER),
        (cockpit_env::DBMS_PASSWORD, secret_key::PASSWORD),
    ] {
        env.push(EnvVar {
            name: name.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: key.to_owned(),
                    // A Secret with only `url`: the renderer writes the
                    // values into hibernate.cfg.xml instead (and says so).
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env
}

/// `RUN_JS_JAVA_OPTIONS`: the spec's, else `-Xmx` at
/// [`DEFAULT_HEAP_PERCENT`] of the cockpit's memory limit (none without a
/// limit: the image's defaults then apply).
pub fn java_options(cluster: &JocCluster) -> Option<String> {
    if let Some(options) = &cluster.spec.java_options {
        return Some(options.clone());
    }
    let limit = cluster
        .spec
        .resources
        .cockpit
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")?;
    let bytes = quantity_bytes(&limit.0)?;
    let heap_mib = bytes / 100.0 * DEFAULT_HEAP_PERCENT as f64 / (1024.0 * 1024.0);
    (heap_mib >= 1.0).then(|| format!("-Xmx{}m", heap_mib.floor() as u64))
}

/// A Kubernetes quantity (`2Gi`, `1536Mi`, `2G`, `1e9`, `0.5Gi`) in bytes.
fn quantity_bytes(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes)
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

/// Single-quotes `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// js7: runs the cockpit image itself to copy the files it ships (its
/// `resources/joc`: `joc.properties` with the log configuration, log4j2.xml,
/// start.d; and `joc-settings.properties` with its security level) into the
/// in-memory volumes, which then hide the image's folders in the cockpit.
fn image_files_container(cluster: &JocCluster) -> Container {
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
        security_context: Some(SecurityContext {
            run_as_user: Some(JOC_USER_ID),
            run_as_group: Some(JOC_GROUP_ID),
            read_only_root_filesystem: Some(true),
            ..restricted_security_context()
        }),
        ..Default::default()
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
/// files over the image's (see `sidecar/src/js7/config_files.rs`), then
/// exits. Runs as JOC's user so that JOC can read the owner-only file.
fn joc_config_container(
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
        security_context: Some(SecurityContext {
            run_as_user: Some(JOC_USER_ID),
            run_as_group: Some(JOC_GROUP_ID),
            read_only_root_filesystem: Some(true),
            ..restricted_security_context()
        }),
        ..Default::default()
    })
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
    if database_ca_secret(cluster).is_some() {
        env.push(value(
            sidecar_env::DATABASE_CA_FILE,
            format!("{}/{}", pod::DATABASE_CA_DIR, pod::DATABASE_CA_KEY),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_cluster as cluster;

    fn ctx() -> BuildContext {
        BuildContext {
            sidecar_image: "joc-ha-sidecar:test".to_owned(),
        }
    }

    fn build_pod(spec: serde_json::Value, component: Component) -> PodSpec {
        pod_template(&cluster(spec), component, &ctx())
            .expect("builds")
            .spec
            .expect("pod spec")
    }

    fn container<'a>(pod: &'a PodSpec, name: &str) -> Option<&'a Container> {
        pod.containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .find(|c| c.name == name)
    }

    fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.iter().flatten().find(|e| e.name == name)
    }

    fn mount<'a>(container: &'a Container, volume: &str) -> Option<&'a VolumeMount> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
    }

    fn arg_after<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
        let args = container.args.as_deref().unwrap_or_default();
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    #[test]
    fn the_image_files_layout_of_the_contract() {
        for component in [Component::Member, Component::ApiServer] {
            let pod = build_pod(serde_json::json!({}), component);
            for name in [pod::RESOURCES_VOLUME, pod::CLASSES_VOLUME] {
                let volume = pod
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == name)
                    .unwrap_or_else(|| panic!("volume {name}"));
                let medium = volume.empty_dir.as_ref().and_then(|e| e.medium.as_deref());
                assert_eq!(medium, Some("Memory"), "{name}");
            }
            let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
            let resources = mount(cockpit, pod::RESOURCES_VOLUME).expect("resources mount");
            assert_eq!(
                resources.mount_path,
                "/var/sos-berlin.com/js7/joc/resources/joc"
            );
            assert_ne!(
                resources.read_only,
                Some(true),
                "the entrypoint appends to joc.properties"
            );
            assert_eq!(resources.sub_path, None);
            let classes = mount(cockpit, pod::CLASSES_VOLUME).expect("classes mount");
            assert_eq!(
                classes.mount_path,
                "/var/sos-berlin.com/js7/joc/webapps/joc/WEB-INF/classes/joc-settings.properties"
            );
            assert_eq!(classes.sub_path.as_deref(), Some("joc-settings.properties"));

            let files = container(&pod, pod::JOC_IMAGE_FILES_INIT_CONTAINER).expect("image files");
            assert_eq!(files.image, cockpit.image, "runs the cockpit image itself");
            let command = files.command.clone().unwrap_or_default();
            assert_eq!(command[..2], ["sh".to_owned(), "-c".to_owned()]);
            assert!(
                command[2].contains(
                    "cp -R '/var/sos-berlin.com/js7/joc/resources/joc'/. /joc-ha/image/resources/"
                ),
                "{}",
                command[2]
            );
            assert!(command[2].contains("'/var/sos-berlin.com/js7/joc/webapps/joc/WEB-INF/classes/joc-settings.properties' /joc-ha/image/classes/"), "{}", command[2]);
            let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
            assert_eq!(config.image.as_deref(), Some("joc-ha-sidecar:test"));
            for c in [files, config] {
                assert_eq!(
                    mount(c, pod::RESOURCES_VOLUME).map(|m| m.mount_path.as_str()),
                    Some(pod::IMAGE_RESOURCES_DIR)
                );
                assert_eq!(
                    mount(c, pod::CLASSES_VOLUME).map(|m| m.mount_path.as_str()),
                    Some(pod::IMAGE_CLASSES_DIR)
                );
                let security = c.security_context.as_ref().expect("security");
                assert_eq!(security.run_as_user, Some(JOC_USER_ID));
            }
            let pod_name = env(config, sidecar_env::POD_NAME)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            assert_eq!(
                pod_name,
                Some("metadata.name"),
                "the ordering comes from the pod name"
            );
            let order: Vec<&str> = pod
                .init_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            // Members: the sidecar runs first, so that it reports a
            // refused database while `joc-config` keeps JOC from starting.
            let want: &[&str] = match component {
                Component::Member => &[
                    pod::SIDECAR_CONTAINER,
                    pod::JOC_IMAGE_FILES_INIT_CONTAINER,
                    pod::JOC_CONFIG_INIT_CONTAINER,
                ],
                Component::ApiServer => &[
                    pod::JOC_IMAGE_FILES_INIT_CONTAINER,
                    pod::JOC_CONFIG_INIT_CONTAINER,
                ],
            };
            assert_eq!(order, want, "{component:?}");
            // JOC starts only on a database this cluster owns: joc-config
            // claims it as `<namespace>/<name>`, like the lease.
            let args = config.args.as_deref().unwrap_or_default();
            assert!(args.iter().any(|a| a == "--claim-database"), "{args:?}");
            let namespace = env(config, sidecar_env::NAMESPACE)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            assert_eq!(namespace, Some("metadata.namespace"));
            assert_eq!(
                env(config, sidecar_env::CLUSTER).and_then(|e| e.value.as_deref()),
                Some("joc")
            );
        }
        // A data directory is quoted for the shell and followed everywhere.
        let pod = build_pod(
            serde_json::json!({"workload": {"jocDataDirectory": "/opt/it's/joc/"}}),
            Component::Member,
        );
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        assert_eq!(
            mount(cockpit, pod::RESOURCES_VOLUME).map(|m| m.mount_path.as_str()),
            Some("/opt/it's/joc/resources/joc")
        );
        let files = container(&pod, pod::JOC_IMAGE_FILES_INIT_CONTAINER).expect("image files");
        assert!(
            files.command.clone().unwrap_or_default()[2]
                .contains("cp -R '/opt/it'\\''s/joc/resources/joc'/.")
        );
    }

    #[test]
    fn joc_config_arguments_follow_the_spec() {
        // (spec, component, flag, expected value after it; None = flag absent)
        let cases: Vec<(serde_json::Value, Component, &str, Option<&str>)> = vec![
            (
                serde_json::json!({}),
                Component::Member,
                "--ordering-offset",
                Some("0"),
            ),
            (
                serde_json::json!({}),
                Component::ApiServer,
                "--ordering-offset",
                Some("50"),
            ),
            (
                serde_json::json!({}),
                Component::Member,
                "--security-level",
                None,
            ),
            (
                serde_json::json!({"securityLevel": "high"}),
                Component::Member,
                "--security-level",
                Some("high"),
            ),
            (
                serde_json::json!({}),
                Component::Member,
                "--license-dir",
                None,
            ),
            (
                serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
                Component::Member,
                "--license-dir",
                Some(pod::LICENSE_DIR),
            ),
            (
                serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
                Component::ApiServer,
                "--license-dir",
                Some(pod::LICENSE_DIR),
            ),
            (
                serde_json::json!({"config": {"configMapName": "mine"}}),
                Component::Member,
                "--user-config-dir",
                Some(pod::USER_CONFIG_DIR),
            ),
            (
                serde_json::json!({}),
                Component::Member,
                "--out-dir",
                Some(pod::IMAGE_RESOURCES_DIR),
            ),
            (
                serde_json::json!({}),
                Component::Member,
                "--classes-dir",
                Some(pod::IMAGE_CLASSES_DIR),
            ),
        ];
        for (spec, component, flag, want) in cases {
            let pod = build_pod(spec.clone(), component);
            let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
            assert_eq!(arg_after(config, flag), want, "{spec} {component:?} {flag}");
        }
        // joc.properties keys: (spec, component, expected --property values)
        let cases: Vec<(serde_json::Value, Component, Vec<&str>)> = vec![
            (
                serde_json::json!({}),
                Component::Member,
                vec![
                    "cluster_id=joc",
                    "cluster_polling_interval=1",
                    "cluster_heart_beat_exceeded_interval=5",
                    "create_db_tables=true",
                ],
            ),
            (
                serde_json::json!({}),
                Component::ApiServer,
                vec![
                    "cluster_id=api",
                    "cluster_polling_interval=1",
                    "cluster_heart_beat_exceeded_interval=5",
                    "create_db_tables=true",
                ],
            ),
            (
                serde_json::json!({"database": {"type": "postgresql", "secretRef": {"name": "db"}, "createTables": false}, "workload": {"jocCluster": {"pollingInterval": "30s", "heartBeatExceededInterval": "1m"}}}),
                Component::Member,
                vec![
                    "cluster_id=joc",
                    "cluster_polling_interval=30",
                    "cluster_heart_beat_exceeded_interval=60",
                    "create_db_tables=false",
                ],
            ),
        ];
        for (spec, component, want) in cases {
            let pod = build_pod(spec.clone(), component);
            let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
            let args = config.args.clone().unwrap_or_default();
            let got: Vec<&str> = args
                .windows(2)
                .filter(|w| w[0] == "--property")
                .map(|w| w[1].as_str())
                .collect();
            assert_eq!(got, want, "{spec}");
            assert_eq!(
                args.iter().any(|a| a == "--api-server"),
                component == Component::ApiServer
            );
        }
        // The license Secret is a volume of the init container only.
        let pod = build_pod(
            serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
            Component::Member,
        );
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == pod::LICENSE_VOLUME)
            .expect("license volume");
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("lic")
        );
        let users: Vec<&str> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .filter(|c| mount(c, pod::LICENSE_VOLUME).is_some())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(users, [pod::JOC_CONFIG_INIT_CONTAINER]);
    }

    #[test]
    fn cockpit_environment() {
        let limit = |memory: &str| serde_json::json!({"resources": {"cockpit": {"limits": {"memory": memory}}}});
        // (spec, env name, expected plain value; None = not set)
        let cases: Vec<(serde_json::Value, &str, Option<&str>)> = vec![
            (serde_json::json!({}), cockpit_env::HTTP_PORT, Some("4446")),
            (
                serde_json::json!({"ports": {"http": 8080}}),
                cockpit_env::HTTP_PORT,
                Some("8080"),
            ),
            (serde_json::json!({}), cockpit_env::HTTPS_PORT, Some("")),
            (serde_json::json!({}), cockpit_env::JAVA_OPTIONS, None),
            (limit("2Gi"), cockpit_env::JAVA_OPTIONS, Some("-Xmx1228m")),
            (limit("1000M"), cockpit_env::JAVA_OPTIONS, Some("-Xmx572m")),
            (
                serde_json::json!({"javaOptions": "-Xmx3g -Dfoo=bar", "resources": {"cockpit": {"limits": {"memory": "2Gi"}}}}),
                cockpit_env::JAVA_OPTIONS,
                Some("-Xmx3g -Dfoo=bar"),
            ),
        ];
        for (spec, name, want) in cases {
            let pod = build_pod(spec.clone(), Component::Member);
            let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
            assert_eq!(
                env(cockpit, name).and_then(|e| e.value.as_deref()),
                want,
                "{spec} {name}"
            );
        }
        let pod = build_pod(serde_json::json!({}), Component::ApiServer);
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        for (name, key) in [
            (cockpit_env::DBMS_PASSWORD, "password"),
            (cockpit_env::DBMS_USER, "user"),
        ] {
            let secret = env(cockpit, name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{name} from the Secret"));
            assert_eq!((secret.name.as_str(), secret.key.as_str()), ("joc-db", key));
        }
        let hostname = env(cockpit, cockpit_env::HOSTNAME)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(hostname, Some("metadata.name"));
        assert!(
            cockpit
                .env
                .iter()
                .flatten()
                .all(|e| e.value.as_deref() != Some("p")),
            "no credential inline"
        );
    }

    #[test]
    fn quantities_and_heap_sizes() {
        let cases = [
            ("2Gi", Some(2.0 * 1024f64.powi(3))),
            ("1536Mi", Some(1536.0 * 1024f64.powi(2))),
            ("2G", Some(2e9)),
            ("1e9", Some(1e9)),
            ("0.5Gi", Some(0.5 * 1024f64.powi(3))),
            ("512", Some(512.0)),
            ("2Gb", None),
            ("lots", None),
        ];
        for (text, want) in cases {
            assert_eq!(quantity_bytes(text), want, "{text}");
        }
        let heap = |memory: &str| {
            java_options(&cluster(
                serde_json::json!({"resources": {"cockpit": {"limits": {"memory": memory}}}}),
            ))
        };
        assert_eq!(heap("1Gi").as_deref(), Some("-Xmx614m"));
        assert_eq!(heap("4Gi").as_deref(), Some("-Xmx2457m"));
        assert_eq!(
            heap("1Ki"),
            None,
            "too small for a heap size: the image's default"
        );
        assert_eq!(heap("lots"), None);
        let requests_only =
            cluster(serde_json::json!({"resources": {"cockpit": {"requests": {"memory": "1Gi"}}}}));
        assert_eq!(
            java_options(&requests_only),
            None,
            "only a limit bounds the heap"
        );
    }

    #[test]
    fn probes_ask_joc_for_its_version() {
        let pod = build_pod(serde_json::json!({}), Component::Member);
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        for (what, probe) in [
            ("startup", &cockpit.startup_probe),
            ("liveness", &cockpit.liveness_probe),
            ("readiness", &cockpit.readiness_probe),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{what}"));
            assert_eq!(get.path.as_deref(), Some("/joc/api/version"), "{what}");
            assert_eq!(get.port, IntOrString::String("http".to_owned()), "{what}");
        }
        let startup = cockpit.startup_probe.as_ref().expect("startup");
        let budget = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
        assert!(budget >= 600, "JOC may take minutes to start: {budget} s");
        // generic: no JOC endpoint to ask.
        let generic = build_pod(
            serde_json::json!({"workload": {"mode": "generic"}}),
            Component::Member,
        );
        let cockpit = container(&generic, pod::COCKPIT_CONTAINER).expect("cockpit");
        assert!(cockpit.liveness_probe.is_none() && cockpit.startup_probe.is_none());
        assert!(
            cockpit
                .readiness_probe
                .as_ref()
                .and_then(|p| p.tcp_socket.as_ref())
                .is_some()
        );
    }

    #[test]
    fn the_sidecar_knows_about_the_license() {
        for (spec, want) in [
            (serde_json::json!({}), Some("false")),
            (
                serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
                Some("true"),
            ),
            (serde_json::json!({"workload": {"mode": "generic"}}), None),
        ] {
            let pod = build_pod(spec.clone(), Component::Member);
            let sidecar = container(&pod, pod::SIDECAR_CONTAINER).expect("sidecar");
            assert_eq!(
                env(sidecar, sidecar_env::JOC_LICENSED).and_then(|e| e.value.as_deref()),
                want,
                "{spec}"
            );
        }
    }

    /// README "Fencing": a js7 member's sidecar sees and may signal JOC's
    /// JVM (one process namespace, JOC's uid), and knows its JETTY_BASE;
    /// API servers and generic pods get neither.
    #[test]
    fn js7_members_share_the_process_namespace_for_fencing() {
        let member = build_pod(serde_json::json!({}), Component::Member);
        assert_eq!(member.share_process_namespace, Some(true));
        let sidecar = container(&member, pod::SIDECAR_CONTAINER).expect("sidecar");
        let security = sidecar.security_context.as_ref().expect("security");
        assert_eq!(security.run_as_user, Some(JOC_USER_ID));
        assert_eq!(security.run_as_group, Some(JOC_GROUP_ID));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(
            security
                .capabilities
                .as_ref()
                .and_then(|c| c.add.as_ref())
                .is_none_or(|add| add.is_empty()),
            "no capability added: {security:?}"
        );
        let cockpit = container(&member, pod::COCKPIT_CONTAINER).expect("cockpit");
        assert_eq!(
            cockpit
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user),
            Some(JOC_USER_ID),
            "the sidecar and JOC run as one uid"
        );
        assert_eq!(
            env(sidecar, sidecar_env::JOC_JETTY_BASE).and_then(|e| e.value.as_deref()),
            Some("/var/sos-berlin.com/js7/joc")
        );
        let api = build_pod(serde_json::json!({"apiServers": 1}), Component::ApiServer);
        assert_eq!(api.share_process_namespace, None);
        let generic = build_pod(
            serde_json::json!({"workload": {"mode": "generic"}}),
            Component::Member,
        );
        assert_eq!(generic.share_process_namespace, None);
        let sidecar = container(&generic, pod::SIDECAR_CONTAINER).expect("sidecar");
        assert_eq!(
            sidecar
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user),
            None
        );
        assert!(env(sidecar, sidecar_env::JOC_JETTY_BASE).is_none());
    }

    #[test]
    fn the_database_ca_reaches_the_sidecar_and_joc() {
        let tls = serde_json::json!({"database": {"type": "postgresql", "secretRef": {"name": "db"},
            "tls": {"mode": "verify-full", "caSecretRef": {"name": "db-ca"}}}});
        let pod = build_pod(tls, Component::Member);
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == pod::DATABASE_CA_VOLUME)
            .expect("CA volume");
        let secret = volume.secret.as_ref().expect("secret");
        assert_eq!(secret.secret_name.as_deref(), Some("db-ca"));
        assert_eq!(
            secret.items.as_ref().map(|i| i[0].key.as_str()),
            Some("ca.crt")
        );
        for name in [
            pod::SIDECAR_CONTAINER,
            pod::JOC_CONFIG_INIT_CONTAINER,
            pod::COCKPIT_CONTAINER,
        ] {
            let c = container(&pod, name).expect(name);
            assert_eq!(
                mount(c, pod::DATABASE_CA_VOLUME).map(|m| m.mount_path.as_str()),
                Some(pod::DATABASE_CA_DIR),
                "{name}"
            );
        }
        for name in [pod::SIDECAR_CONTAINER, pod::JOC_CONFIG_INIT_CONTAINER] {
            let c = container(&pod, name).expect(name);
            assert_eq!(
                env(c, sidecar_env::DATABASE_CA_FILE).and_then(|e| e.value.as_deref()),
                Some("/etc/joc-ha/database-ca/ca.crt"),
                "{name}"
            );
            assert_eq!(
                env(c, sidecar_env::DATABASE_TLS_MODE).and_then(|e| e.value.as_deref()),
                Some("verify-full"),
                "{name}"
            );
        }
        let plain = build_pod(serde_json::json!({}), Component::Member);
        assert!(
            plain
                .volumes
                .iter()
                .flatten()
                .all(|v| v.name != pod::DATABASE_CA_VOLUME)
        );
    }

    #[test]
    fn generic_mode_mounts_the_users_files_as_they_are() {
        let pod = build_pod(
            serde_json::json!({"workload": {"mode": "generic"}, "config": {"secretName": "mine"}}),
            Component::Member,
        );
        let init: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, [pod::SIDECAR_CONTAINER]);
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        let paths: Vec<&str> = cockpit
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == pod::CONFIG_VOLUME)
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/var/sos-berlin.com/js7/joc/resources/joc/joc.properties",
                "/var/sos-berlin.com/js7/joc/resources/joc/hibernate.cfg.xml"
            ]
        );
        assert!(cockpit.env.is_none(), "no RUN_JS_* for another application");
        // js7: the user's files go through the renderer, never half-mounted.
        let js7 = pod_template(
            &cluster(serde_json::json!({"config": {"secretName": "mine"}})),
            Component::Member,
            &ctx(),
        )
        .expect("builds")
        .spec
        .expect("pod");
        let cockpit = container(&js7, pod::COCKPIT_CONTAINER).expect("cockpit");
        assert!(mount(cockpit, pod::CONFIG_VOLUME).is_none());
        let config = container(&js7, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
        assert_eq!(
            mount(config, pod::CONFIG_VOLUME).map(|m| m.mount_path.as_str()),
            Some(pod::USER_CONFIG_DIR)
        );
    }
}
