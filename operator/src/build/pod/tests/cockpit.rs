//! The cockpit container: environment, heap size, probes.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::build::pod::cockpit::quantity_bytes;

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
