//! The JocCluster's status from what the operator observed: pods, the active
//! Service's endpoints, and problems found while reading the spec. Pure.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    COMPONENT_API_SERVER, COMPONENT_MEMBER, LABEL_COMPONENT, LABEL_ROLE, ROLE_ACTIVE, condition,
    reason,
};
use joc_ha_crds::v1alpha1::{JocClusterStatus, MemberStatus, Phase, WorkloadMode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::version::{joc_version, supported_list};

/// Annotation the sidecar keeps on its pod with its lease term.
pub use joc_ha_crds::names::ANNOTATION_LEASE_TERM;

/// What the operator saw in the cluster.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Pods labeled with the cluster's name.
    pub pods: Vec<Pod>,
    /// Ready endpoints behind the active Service `<name>`.
    pub active_endpoints: Vec<String>,
    /// A rollout is under way (pods of an older revision remain).
    pub rolling_out: bool,
    /// Why a StatefulSet of the cluster cannot create its pods (the note of
    /// its latest `FailedCreate` Event), while pods are missing.
    pub pod_create_failure: Option<String>,
    /// A sidecar's latest report that the database refused its login.
    pub database_login_failure: Option<String>,
    /// js7: a sidecar's latest report that the database belongs to another
    /// JocCluster.
    pub database_in_use: Option<String>,
}

/// How long a cluster with member pods may have no single active endpoint
/// before it is Degraded: longer than a fail-over (lease TTL plus JOC's
/// switch) and than JOC's start, so that neither degrades a healthy cluster.
pub const NO_ACTIVE_MEMBER_GRACE_SECONDS: i64 = 180;

/// The facts the `Degraded` condition is decided from.
#[derive(Debug, Clone, Copy)]
pub struct DegradedFacts<'a> {
    pub problems: &'a [Problem],
    pub pod_create_failure: Option<&'a str>,
    pub database_login_failure: Option<&'a str>,
    pub database_in_use: Option<&'a str>,
    /// Member pods that exist.
    pub member_pods: usize,
    /// Seconds since the Service last had exactly one endpoint (or since
    /// the status first said it had none); `None` while it has one.
    pub unavailable_for_seconds: Option<i64>,
}

/// Pure: why the cluster is Degraded, `None` when nothing is wrong. The
/// first that applies wins: bad input and name conflicts (nothing is
/// applied until they are fixed), pods that cannot be created, a database
/// that refuses the login, and no active member past the grace period.
pub fn degraded_reason(facts: &DegradedFacts) -> Option<(&'static str, String)> {
    if let Some(problem) = facts.problems.first() {
        return Some((problem.reason, problem.message.clone()));
    }
    if let Some(why) = facts.pod_create_failure {
        return Some((
            reason::POD_CREATE_FAILED,
            format!("the StatefulSet cannot create pods: {why}"),
        ));
    }
    // A refusal reported while some member is active is past (the Event
    // stays fresh for a while after the Secret was fixed).
    if let Some(why) = facts.database_login_failure
        && facts.unavailable_for_seconds.is_some()
    {
        return Some((
            reason::DATABASE_LOGIN_FAILED,
            format!(
                "the sidecars cannot log in to the database: {why}. Fix the user or password in the database Secret (spec.database.secretRef); the pods then restart with it"
            ),
        ));
    }
    if let Some(why) = facts.database_in_use
        && facts.unavailable_for_seconds.is_some()
    {
        return Some((reason::DATABASE_IN_USE, why.to_owned()));
    }
    match facts.unavailable_for_seconds {
        Some(seconds) if facts.member_pods > 0 && seconds > NO_ACTIVE_MEMBER_GRACE_SECONDS => {
            Some((
                reason::NO_ACTIVE_MEMBER,
                format!(
                    "no single active member for {seconds} s (more than {NO_ACTIVE_MEMBER_GRACE_SECONDS} s): see the Available condition, the members' sidecar logs and Events"
                ),
            ))
        }
        _ => None,
    }
}

/// A problem that needs a person; it makes the cluster Degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a pod is Ready: the one rule every reader of the API uses.
pub use joc_ha_crds::pods::is_ready as is_pod_ready;

fn component(pod: &Pod) -> Option<&str> {
    pod.labels().get(LABEL_COMPONENT).map(String::as_str)
}

pub fn compute_status(
    cluster: &JocCluster,
    observed: &Observed,
    problems: &[Problem],
    now: Time,
) -> JocClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;

    let mut members: Vec<MemberStatus> = observed
        .pods
        .iter()
        .filter(|p| component(p) == Some(COMPONENT_MEMBER))
        .map(|pod| MemberStatus {
            name: pod.name_any(),
            ready: is_pod_ready(pod),
            role: pod.labels().get(LABEL_ROLE).cloned(),
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let ready_members = members.iter().filter(|m| m.ready).count() as i32;
    let ready_api_servers = observed
        .pods
        .iter()
        .filter(|p| component(p) == Some(COMPONENT_API_SERVER) && is_pod_ready(p))
        .count() as i32;

    let active: Vec<&MemberStatus> = members
        .iter()
        .filter(|m| m.role.as_deref() == Some(ROLE_ACTIVE))
        .collect();
    let active_member = match active.as_slice() {
        [one] => Some(one.name.clone()),
        _ => None,
    };
    let lease_term = active_member.as_ref().and_then(|name| {
        observed
            .pods
            .iter()
            .find(|p| &p.name_any() == name)
            .and_then(|p| p.annotations().get(ANNOTATION_LEASE_TERM))
            .and_then(|t| t.parse().ok())
    });

    let desired_members = cluster.spec.members;
    let desired_api = cluster.spec.api_servers;
    // With a name conflict the Service `<name>` may be another cluster's:
    // its endpoints say nothing about this one.
    let conflict = problems.iter().any(|p| p.reason == reason::NAME_CONFLICT);
    let available = observed.active_endpoints.len() == 1 && !conflict;
    let all_ready = ready_members == desired_members && ready_api_servers == desired_api;

    let set = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };

    let available_message = match observed.active_endpoints.as_slice() {
        _ if conflict => {
            "the Service of this cluster's name is not this cluster's: see the Degraded condition"
                .to_owned()
        }
        [one] => format!("the Service routes to the active member {one}"),
        [] => "no active member: the Service has no endpoint; see the sidecar logs and Events"
            .to_owned(),
        many => format!(
            "the Service routes to {} pods ({}); the sidecars are correcting it",
            many.len(),
            many.join(", ")
        ),
    };
    let unavailable_for_seconds = (!available).then(|| {
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == condition::AVAILABLE && c.status == "False")
            .map_or(now.0, |c| c.last_transition_time.0);
        now.0.as_second() - since.as_second()
    });
    let degraded = degraded_reason(&DegradedFacts {
        problems,
        pod_create_failure: observed.pod_create_failure.as_deref(),
        database_login_failure: observed.database_login_failure.as_deref(),
        database_in_use: observed.database_in_use.as_deref(),
        member_pods: members.len(),
        unavailable_for_seconds,
    });
    let mut conditions = vec![
        set(
            condition::READY,
            all_ready && available && degraded.is_none(),
            if all_ready { "AllReady" } else { "NotAllReady" },
            format!(
                "{ready_members}/{desired_members} members and {ready_api_servers}/{desired_api} API servers Ready"
            ),
        ),
        set(
            condition::AVAILABLE,
            available,
            if available {
                "ActiveMember"
            } else {
                "NoSingleActiveMember"
            },
            available_message,
        ),
        set(
            condition::PROGRESSING,
            observed.rolling_out,
            if observed.rolling_out {
                "RollingUpdate"
            } else {
                "UpToDate"
            },
            if observed.rolling_out {
                "updating members: standbys first, then a switch-over, then the old active member"
                    .to_owned()
            } else {
                "every pod runs the current template".to_owned()
            },
        ),
        set(
            condition::DEGRADED,
            degraded.is_some(),
            degraded.as_ref().map_or(reason::AS_EXPECTED, |d| d.0),
            degraded
                .as_ref()
                .map_or_else(|| "no problem found".to_owned(), |d| d.1.clone()),
        ),
    ];
    if cluster.spec.workload.mode == WorkloadMode::Js7 {
        let (licensed, reason, message) = license_state(cluster);
        conditions.push(set(condition::LICENSED, licensed, reason, message));
        let (known, reason, message) = version_state(&cluster.spec.image);
        conditions.push(set(condition::JOC_VERSION, known, reason, message));
    }

    let phase = if degraded.is_some() {
        Phase::Degraded
    } else if available {
        Phase::Running
    } else if ready_members == 0 {
        Phase::Pending
    } else {
        Phase::Degraded
    };

    JocClusterStatus {
        phase: Some(phase),
        active_member,
        lease_term,
        members,
        ready_members,
        member_summary: Some(format!("{ready_members}/{desired_members}")),
        ready_api_servers,
        api_server_summary: Some(format!("{ready_api_servers}/{desired_api}")),
        observed_generation: generation,
        conditions,
        // Owned by the sidecars; the operator never writes it.
        last_switchover: None,
    }
}

/// The `Licensed` condition: (status, reason, message).
fn license_state(cluster: &JocCluster) -> (bool, &'static str, String) {
    match (&cluster.spec.license, cluster.spec.members) {
        (Some(license), _) => (
            true,
            reason::LICENSE_GIVEN,
            format!(
                "the license of Secret {} is installed in every JOC pod; JOC checks it at start",
                license.secret_ref.name
            ),
        ),
        (None, members) if members > 1 => (
            false,
            reason::NO_CLUSTER_LICENSE,
            format!(
                "no JS7 cluster license (spec.license): JOC fail-over will not work. A standby JOC never takes over from a failed one, and a switch-over would leave no member running JOC's services, so the sidecars never ask JOC to switch; the Service routes to the member JOC itself keeps active. Give a license Secret, or run 1 member instead of {members}"
            ),
        ),
        (None, _) => (
            false,
            reason::NO_LICENSE_SINGLE_MEMBER,
            "no JS7 license (spec.license): fine for a single member, which has nothing to fail over to".to_owned(),
        ),
    }
}

/// The `JocVersion` condition: (status, reason, message).
fn version_state(image: &str) -> (bool, &'static str, String) {
    match joc_version(image) {
        Some(version) if version.is_supported() => (
            true,
            reason::SUPPORTED_JOC_VERSION,
            format!(
                "JOC {version} (from the image tag): joc-ha's rules were checked for this release"
            ),
        ),
        Some(version) => (
            false,
            reason::UNKNOWN_JOC_VERSION,
            format!(
                "JOC {version} (from the image tag of {image}) is not a release joc-ha knows ({}): its cluster rules may differ; run a known release or check joc-ha's release notes",
                supported_list()
            ),
        ),
        None => (
            false,
            reason::UNKNOWN_JOC_VERSION,
            format!(
                "cannot read JOC's release from the image {image}: tag it like sosberlin/js7:joc-2-8-1 (known releases: {})",
                supported_list()
            ),
        ),
    }
}

/// A Warning Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub reason: String,
    pub message: String,
}

/// The conditions that ask for a Warning Event when they become False:
/// one Event per change, not one per reconcile.
const WARNING_CONDITIONS: [&str; 2] = [condition::LICENSED, condition::JOC_VERSION];

/// Warnings for the conditions of [`WARNING_CONDITIONS`] that are False in
/// `current` and were not False with the same reason and message in `previous`.
pub fn new_warnings(previous: &JocClusterStatus, current: &JocClusterStatus) -> Vec<Warning> {
    current
        .conditions
        .iter()
        .filter(|c| WARNING_CONDITIONS.contains(&c.type_.as_str()) && c.status == "False")
        // The single-member case is information, not a warning.
        .filter(|c| c.reason != reason::NO_LICENSE_SINGLE_MEMBER)
        .filter(|c| {
            !previous.conditions.iter().any(|p| {
                p.type_ == c.type_
                    && p.status == c.status
                    && p.reason == c.reason
                    && p.message == c.message
            })
        })
        .map(|c| Warning {
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
}
