//! Unit tests of the status: conditions, phase, the Degraded rule, warnings.

use super::*;
use joc_ha_crds::names::LABEL_CLUSTER;

fn cluster(members: i32, api_servers: i32) -> JocCluster {
    cluster_with(members, api_servers, serde_json::json!({}))
}

fn cluster_with(members: i32, api_servers: i32, extra: serde_json::Value) -> JocCluster {
    let mut spec = serde_json::json!({"image": "sosberlin/js7:joc-2-8-1", "members": members, "apiServers": api_servers,
                 "database": {"type": "postgresql", "secretRef": {"name": "db"}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster",
        "metadata": {"name": "joc", "namespace": "js7", "uid": "u", "generation": 4},
        "spec": spec
    }))
    .expect("cluster")
}

fn find<'a>(status: &'a JocClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[test]
fn license_and_version_conditions() {
    let license = serde_json::json!({"license": {"secretRef": {"name": "js7-license"}}});
    // (members, extra spec, Licensed status, its reason, JocVersion status, its reason, warnings)
    type State<'a> = Option<(&'a str, &'a str)>;
    let cases: Vec<(i32, serde_json::Value, State, State, Vec<&str>)> = vec![
        (
            2,
            serde_json::json!({}),
            Some(("False", "NoClusterLicense")),
            Some(("True", "SupportedJocVersion")),
            vec!["NoClusterLicense"],
        ),
        (
            1,
            serde_json::json!({}),
            Some(("False", "NoLicenseSingleMember")),
            Some(("True", "SupportedJocVersion")),
            vec![],
        ),
        (
            3,
            license.clone(),
            Some(("True", "LicenseGiven")),
            Some(("True", "SupportedJocVersion")),
            vec![],
        ),
        (
            1,
            serde_json::json!({"image": "sosberlin/js7:joc-2-6-5"}),
            Some(("False", "NoLicenseSingleMember")),
            Some(("False", "UnknownJocVersion")),
            vec!["UnknownJocVersion"],
        ),
        (
            1,
            serde_json::json!({"image": "sosberlin/js7:latest"}),
            Some(("False", "NoLicenseSingleMember")),
            Some(("False", "UnknownJocVersion")),
            vec!["UnknownJocVersion"],
        ),
        (
            2,
            serde_json::json!({"workload": {"mode": "generic"}}),
            None,
            None,
            vec![],
        ),
    ];
    for (members, extra, licensed, version, warnings) in cases {
        let c = cluster_with(members, 0, extra.clone());
        let status = compute_status(&c, &Observed::default(), &[], now());
        let got = |type_| find(&status, type_).map(|c| (c.status.as_str(), c.reason.as_str()));
        assert_eq!(got("Licensed"), licensed, "{members} {extra}");
        assert_eq!(got("JocVersion"), version, "{members} {extra}");
        let fresh = new_warnings(&JocClusterStatus::default(), &status);
        let reasons: Vec<&str> = fresh.iter().map(|w| w.reason.as_str()).collect();
        assert_eq!(reasons, warnings, "{members} {extra}");
        // Once in the status, the same condition raises no new Event.
        assert!(new_warnings(&status, &status).is_empty());
        // Neither kind of notice degrades the cluster.
        assert_eq!(
            find(&status, "Degraded").map(|c| c.status.as_str()),
            Some("False")
        );
    }
    let status = compute_status(&cluster(3, 0), &Observed::default(), &[], now());
    let message = &find(&status, "Licensed").expect("Licensed").message;
    assert!(message.contains("fail-over will not work"), "{message}");
    let status = compute_status(
        &cluster_with(
            1,
            0,
            serde_json::json!({"image": "sosberlin/js7:joc-3-0-0"}),
        ),
        &Observed::default(),
        &[],
        now(),
    );
    let message = &find(&status, "JocVersion").expect("JocVersion").message;
    assert!(
        message.contains("3.0.0") && message.contains("2.7, 2.8, 2.9"),
        "{message}"
    );
}

fn pod(name: &str, component: &str, role: Option<&str>, ready: bool) -> Pod {
    let mut labels = serde_json::json!({LABEL_CLUSTER: "joc", LABEL_COMPONENT: component});
    if let Some(role) = role {
        labels[LABEL_ROLE] = role.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels, "annotations": {ANNOTATION_LEASE_TERM: "12"}},
        "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    }))
    .expect("pod")
}

fn now() -> Time {
    Time(jiff::Timestamp::UNIX_EPOCH)
}

#[test]
fn a_healthy_cluster_is_running_and_available() {
    let observed = Observed {
        pods: vec![
            pod("joc-0", "member", Some("active"), true),
            pod("joc-1", "member", Some("standby"), true),
            pod("joc-2", "member", Some("standby"), true),
            pod("joc-api-a", "api-server", None, true),
        ],
        active_endpoints: vec!["joc-0".into()],
        ..Default::default()
    };
    let status = compute_status(&cluster(3, 1), &observed, &[], now());
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.active_member.as_deref(), Some("joc-0"));
    assert_eq!(status.lease_term, Some(12));
    assert_eq!(status.member_summary.as_deref(), Some("3/3"));
    assert_eq!(status.api_server_summary.as_deref(), Some("1/1"));
    assert_eq!(status.observed_generation, Some(4));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(4))
    );
}

#[test]
fn two_active_endpoints_are_not_available() {
    let observed = Observed {
        pods: vec![
            pod("joc-0", "member", Some("active"), true),
            pod("joc-1", "member", Some("active"), true),
        ],
        active_endpoints: vec!["joc-0".into(), "joc-1".into()],
        ..Default::default()
    };
    let status = compute_status(&cluster(2, 0), &observed, &[], now());
    assert_eq!(status.active_member, None);
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert_eq!(available.status, "False");
    assert!(available.message.contains("2 pods"));
}

#[test]
fn a_problem_degrades_with_its_message() {
    let problem = Problem {
        reason: "SecretMissing",
        message: "Secret db not found".into(),
    };
    let status = compute_status(&cluster(2, 0), &Observed::default(), &[problem], now());
    assert_eq!(status.phase, Some(Phase::Degraded));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "SecretMissing");
    assert_eq!(degraded.message, "Secret db not found");
}

#[test]
fn degraded_is_decided_from_the_facts() {
    let missing = [Problem {
        reason: reason::SECRET_MISSING,
        message: "Secret db not found".into(),
    }];
    let healthy = DegradedFacts {
        problems: &[],
        pod_create_failure: None,
        database_login_failure: None,
        database_in_use: None,
        member_pods: 2,
        unavailable_for_seconds: None,
    };
    let grace = NO_ACTIVE_MEMBER_GRACE_SECONDS;
    // (what, facts, reason or None)
    let cases: Vec<(&str, DegradedFacts, Option<&str>)> = vec![
        ("healthy", healthy, None),
        (
            "a problem",
            DegradedFacts {
                problems: &missing,
                ..healthy
            },
            Some(reason::SECRET_MISSING),
        ),
        (
            "a problem wins over the rest",
            DegradedFacts {
                problems: &missing,
                pod_create_failure: Some("quota"),
                unavailable_for_seconds: Some(grace + 1),
                ..healthy
            },
            Some(reason::SECRET_MISSING),
        ),
        (
            "pods cannot be created",
            DegradedFacts {
                pod_create_failure: Some("quota"),
                member_pods: 0,
                ..healthy
            },
            Some(reason::POD_CREATE_FAILED),
        ),
        (
            "the database refuses the login",
            DegradedFacts {
                database_login_failure: Some("bad password"),
                unavailable_for_seconds: Some(1),
                ..healthy
            },
            Some(reason::DATABASE_LOGIN_FAILED),
        ),
        (
            "the database belongs to another cluster",
            DegradedFacts {
                database_in_use: Some("belongs to JocCluster a/joc"),
                unavailable_for_seconds: Some(1),
                ..healthy
            },
            Some(reason::DATABASE_IN_USE),
        ),
        (
            "a refusal while a member is active is past",
            DegradedFacts {
                database_login_failure: Some("bad password"),
                ..healthy
            },
            None,
        ),
        (
            "no active member within the grace",
            DegradedFacts {
                unavailable_for_seconds: Some(grace),
                ..healthy
            },
            None,
        ),
        (
            "no active member past the grace",
            DegradedFacts {
                unavailable_for_seconds: Some(grace + 1),
                ..healthy
            },
            Some(reason::NO_ACTIVE_MEMBER),
        ),
        (
            "no member pods: nothing to be active yet",
            DegradedFacts {
                unavailable_for_seconds: Some(grace + 1),
                member_pods: 0,
                ..healthy
            },
            None,
        ),
    ];
    for (what, facts, want) in cases {
        let got = degraded_reason(&facts);
        assert_eq!(got.as_ref().map(|d| d.0), want, "{what}");
        if let Some((_, message)) = got {
            assert_ne!(message, "no problem found", "{what}");
        }
    }
}

#[test]
fn no_active_member_past_the_grace_degrades_the_status() {
    let mut c = cluster(2, 0);
    let observed = Observed {
        pods: vec![
            pod("joc-0", "member", Some("standby"), true),
            pod("joc-1", "member", Some("standby"), true),
        ],
        ..Default::default()
    };
    let first = compute_status(&c, &observed, &[], now());
    let degraded = find(&first, "Degraded").expect("Degraded");
    assert_eq!(degraded.status, "False", "within the grace: {degraded:?}");
    c.status = Some(first);
    let later =
        Time(jiff::Timestamp::from_second(NO_ACTIVE_MEMBER_GRACE_SECONDS + 1).expect("time"));
    let status = compute_status(&c, &observed, &[], later);
    let degraded = find(&status, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::NO_ACTIVE_MEMBER)
    );
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn a_name_conflict_is_not_available_whatever_the_service_routes_to() {
    let observed = Observed {
        active_endpoints: vec!["joc-0".into()],
        ..Default::default()
    };
    let conflict = Problem {
        reason: reason::NAME_CONFLICT,
        message: "Service joc-members already exists and belongs to JocCluster joc".into(),
    };
    let status = compute_status(&cluster(2, 0), &observed, &[conflict], now());
    let available = find(&status, "Available").expect("Available");
    assert_eq!(available.status, "False");
    let degraded = find(&status, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NameConflict")
    );
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn transition_times_survive_an_unchanged_condition() {
    let mut c = cluster(1, 0);
    let earlier = Time(jiff::Timestamp::from_second(1_000).expect("time"));
    c.status = Some(JocClusterStatus {
        conditions: vec![Condition {
            type_: "Available".into(),
            status: "False".into(),
            reason: "x".into(),
            message: "y".into(),
            observed_generation: Some(1),
            last_transition_time: earlier.clone(),
        }],
        ..Default::default()
    });
    let status = compute_status(&c, &Observed::default(), &[], now());
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert_eq!(available.last_transition_time, earlier);
}

#[test]
fn fenced_members_show_in_status_and_a_malformed_list_changes_nothing() {
    use joc_ha_crds::names::ANNOTATION_FENCED_MEMBERS;
    let observed = Observed {
        pods: vec![
            pod("joc-0", "member", Some("active"), true),
            pod("joc-1", "member", Some("standby"), true),
        ],
        active_endpoints: vec!["joc-0".into()],
        ..Default::default()
    };
    let annotated = |value: &str, previous: Option<JocClusterStatus>| {
        let mut c = cluster(2, 0);
        c.metadata.annotations =
            Some([(ANNOTATION_FENCED_MEMBERS.to_owned(), value.to_owned())].into());
        c.status = previous;
        c
    };
    // (story, annotation, fenced in status, condition status, reason)
    let fenced_one = compute_status(&annotated(r#"["joc-1"]"#, None), &observed, &[], now());
    let cases = [
        (
            "none fenced",
            compute_status(&cluster(2, 0), &observed, &[], now()),
            None,
            "False",
            reason::NONE_FENCED,
        ),
        (
            "one fenced",
            fenced_one.clone(),
            Some("joc-1"),
            "True",
            reason::MEMBERS_FENCED,
        ),
        (
            "emptied",
            compute_status(
                &annotated("[]", Some(fenced_one.clone())),
                &observed,
                &[],
                now(),
            ),
            None,
            "False",
            reason::NONE_FENCED,
        ),
        (
            "malformed: the members fenced before stay so",
            compute_status(
                &annotated("joc-0", Some(fenced_one.clone())),
                &observed,
                &[],
                now(),
            ),
            Some("joc-1"),
            "Unknown",
            reason::INVALID_FENCING,
        ),
        (
            "malformed with none fenced before",
            compute_status(&annotated("[\"*\"]", None), &observed, &[], now()),
            None,
            "Unknown",
            reason::INVALID_FENCING,
        ),
    ];
    for (story, status, fenced, condition_status, why) in cases {
        assert_eq!(status.fenced.as_deref(), fenced, "{story}");
        let members: Vec<&str> = status
            .members
            .iter()
            .filter(|m| m.fenced)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(members, fenced.into_iter().collect::<Vec<_>>(), "{story}");
        let c = find(&status, condition::FENCED).expect("the Fenced condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (condition_status, why),
            "{story}: {}",
            c.message
        );
    }
    // A malformed list warns once, not at every reconcile.
    let malformed = compute_status(
        &annotated("joc-0", Some(fenced_one.clone())),
        &observed,
        &[],
        now(),
    );
    let warnings = new_warnings(&fenced_one, &malformed);
    assert!(
        warnings
            .iter()
            .any(|w| w.reason == reason::INVALID_FENCING && w.message.contains("JSON array")),
        "{warnings:?}"
    );
    assert!(
        new_warnings(&malformed, &malformed)
            .iter()
            .all(|w| w.reason != reason::INVALID_FENCING)
    );
}
