//! Unit tests of the pod template: helpers and what spans containers
//! (the sidecar's environment, fencing, the database CA, generic mode).

mod cockpit;
mod hook;
mod joc_files;

use joc_ha_crds::names::{cockpit_env, sidecar_env};

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
    assert_eq!(init, [pod::SIDECAR_CONTAINER, pod::HOOK_INIT_CONTAINER]);
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
