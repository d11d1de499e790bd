//! The cockpit container.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{cockpit_env, pod, secret_key};
use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, Probe,
    SecretKeySelector, SecurityContext, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::hook::{hook_mount, pre_stop_hook};
use super::{
    Component, JOC_GROUP_ID, JOC_USER_ID, env_value, field_ref, read_only_mount,
    restricted_security_context,
};

pub(super) fn cockpit_container(cluster: &JocCluster, component: Component) -> Container {
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
        container.volume_mounts = Some(vec![
            read_only_mount(pod::ROLE_VOLUME, pod::ROLE_DIR),
            hook_mount(),
        ]);
        // Hand the lease over before JOC stops, so a deleted active pod
        // leaves the Service before it stops answering. An `exec`: the
        // sidecar's /prestop answers on loopback only (see `super::hook`).
        container.lifecycle = Some(Lifecycle {
            pre_stop: Some(pre_stop_hook()),
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
pub(super) fn quantity_bytes(text: &str) -> Option<f64> {
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
