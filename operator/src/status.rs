//! The JocCluster's status from what the operator observed: pods, the active
//! Service's endpoints, and problems found while reading the spec. Pure.

use joc_ha_crds::JocCluster;
use joc_ha_crds::fencing::{fenced_members, fenced_now};
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
    // A malformed annotation changes nothing: the members fenced before
    // stay fenced here as in the sidecars, and the condition says why.
    let fencing = fenced_members(cluster.annotations());
    let fenced = fenced_now(cluster);

    let mut members: Vec<MemberStatus> = observed
        .pods
        .iter()
        .filter(|p| component(p) == Some(COMPONENT_MEMBER))
        .map(|pod| MemberStatus {
            name: pod.name_any(),
            ready: is_pod_ready(pod),
            role: pod.labels().get(LABEL_ROLE).cloned(),
            fenced: fenced.contains(&pod.name_any()),
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
    conditions.push(match &fencing {
        Ok(_) if fenced.is_empty() => set(
            condition::FENCED,
            false,
            reason::NONE_FENCED,
            "no member is fenced".to_owned(),
        ),
        Ok(_) => set(
            condition::FENCED,
            true,
            reason::MEMBERS_FENCED,
            format!(
                "{} never take or receive the lease until `kubectl joc unfence`",
                fenced.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(error) => Condition {
            status: "Unknown".to_owned(),
            ..set(
                condition::FENCED,
                false,
                reason::INVALID_FENCING,
                format!("{error}; nothing changed"),
            )
        },
    });
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
        fenced: (!fenced.is_empty()).then(|| fenced.iter().cloned().collect::<Vec<_>>().join(",")),
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
/// `current`, and for a malformed `joc-ha.dev/fenced-members` (its
/// condition Unknown with reason `InvalidFencing`), that were not so with
/// the same reason and message in `previous`.
pub fn new_warnings(previous: &JocClusterStatus, current: &JocClusterStatus) -> Vec<Warning> {
    current
        .conditions
        .iter()
        .filter(|c| {
            (WARNING_CONDITIONS.contains(&c.type_.as_str()) && c.status == "False")
                || c.reason == reason::INVALID_FENCING
        })
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
#[path = "status_tests.rs"]
mod tests;
