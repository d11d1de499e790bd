use std::time::Duration;

use super::*;

#[test]
fn the_crds_name_rules_use_the_bound_of_names_rs() {
    use crate::names::{CLUSTER_NAME_PATTERN, MAX_CLUSTER_NAME_LEN};
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(JocCluster::crd()).expect("crd");
    let rules =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"];
    let rules: Vec<&str> = rules
        .as_array()
        .expect("root rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(
        rules.contains(&format!("size(self.metadata.name) <= {MAX_CLUSTER_NAME_LEN}").as_str()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&format!("self.metadata.name.matches('{CLUSTER_NAME_PATTERN}')").as_str()),
        "{rules:?}"
    );
}

#[test]
fn durations_in_the_formats_the_crd_admits() {
    assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
    for bad in ["", "5", "s", "5h", "-1s", "5 s", "1e9s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn defaults_match_the_documented_ones() {
    let spec: JocClusterSpec = serde_json::from_value(serde_json::json!({
        "image": "sosberlin/js7:joc-2-8-1",
        "database": {"type": "postgresql", "secretRef": {"name": "db"}}
    }))
    .expect("minimal spec");
    assert_eq!(spec.members, 2);
    assert_eq!(spec.api_servers, 0);
    assert_eq!(spec.ports.http, 4446);
    assert!(
        spec.database.create_tables,
        "JOC creates its tables by default"
    );
    assert_eq!(spec.license, None);
    assert_eq!(spec.security_level, None);
    assert_eq!(spec.lease.ttl(), Ok(Duration::from_secs(5)));
    assert_eq!(spec.lease.renew_interval(), Ok(Duration::from_secs(1)));
    assert_eq!(spec.workload.mode, WorkloadMode::Js7);
    assert_eq!(
        spec.workload.joc_data_directory(),
        "/var/sos-berlin.com/js7/joc"
    );
}

#[test]
fn joc_timings_follow_the_lease_unless_set() {
    let mut workload = WorkloadSpec::default();
    let lease = LeaseSpec::default();
    assert_eq!(
        workload.joc_timings(&lease),
        Ok(JocTimings {
            polling_interval_s: 1,
            heart_beat_exceeded_interval_s: 5
        })
    );
    let slow = LeaseSpec {
        ttl: "10s".into(),
        renew_interval: "2500ms".into(),
    };
    assert_eq!(
        workload.joc_timings(&slow),
        Ok(JocTimings {
            polling_interval_s: 3,
            heart_beat_exceeded_interval_s: 10
        })
    );
    workload.joc_cluster = JocClusterTimings {
        polling_interval: Some("30s".into()),
        heart_beat_exceeded_interval: Some("1m".into()),
    };
    assert_eq!(
        workload.joc_timings(&lease),
        Ok(JocTimings {
            polling_interval_s: 30,
            heart_beat_exceeded_interval_s: 60
        })
    );
}

#[test]
fn unknown_database_type_is_refused() {
    let result: Result<JocClusterSpec, _> = serde_json::from_value(serde_json::json!({
        "image": "x",
        "database": {"type": "oracle", "secretRef": {"name": "db"}}
    }));
    assert!(result.is_err());
}
