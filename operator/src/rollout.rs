//! Rolling updates that keep the active member: the members' StatefulSet
//! uses `OnDelete`, and the operator replaces pods itself — outdated
//! standbys first, one at a time, then a switch-over to an updated standby,
//! then the old active member (compare CloudNativePG's
//! `primaryUpdateStrategy`). The decision is a pure function of the pods.

use joc_ha_crds::names::{LABEL_ROLE, ROLE_ACTIVE, SWITCHOVER_TO_ANY};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::status::is_pod_ready;

/// Label the StatefulSet controller puts on each pod with its revision.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The next step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every member runs the current revision.
    Done,
    /// A pod is starting, stopping or not Ready: wait before the next step.
    Wait(String),
    /// Replace this outdated standby (delete it; the StatefulSet recreates it).
    Replace(String),
    /// Only the active member is outdated: ask for a switch-over (the value
    /// of the annotation) so that it becomes a standby.
    SwitchOver(&'static str),
}

/// Decides the next step, given the member pods, the StatefulSet's update
/// revision, the desired member count and whether a switch-over request is
/// already pending.
pub fn next_step(
    members: &[Pod],
    update_revision: Option<&str>,
    desired: i32,
    switchover_pending: bool,
) -> Step {
    let Some(revision) = update_revision else {
        return Step::Done;
    };
    let outdated: Vec<&Pod> = members
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) != Some(revision))
        .collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    let is_active = |p: &Pod| p.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_ACTIVE);
    // No member is active or Ready (e.g. none can log in to the database):
    // nothing to keep, and waiting for Ready pods would wait for ever.
    // Replace the outdated members one after another without waiting. (A
    // moment without an active label during a fail-over has Ready pods.)
    if !members.iter().any(|p| is_active(p) || is_pod_ready(p)) {
        return match outdated
            .iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
        {
            Some(pod) => Step::Replace(pod.name_any()),
            None => Step::Wait("outdated members are stopping".to_owned()),
        };
    }
    if let Some(busy) = members
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_some() || !is_pod_ready(p))
    {
        return Step::Wait(format!("{} is not Ready yet", busy.name_any()));
    }
    if (members.len() as i32) < desired {
        return Step::Wait("waiting for every member to exist".to_owned());
    }
    let mut standbys: Vec<&&Pod> = outdated.iter().filter(|p| !is_active(p)).collect();
    standbys.sort_by_key(|p| p.name_any());
    if let Some(standby) = standbys.first() {
        return Step::Replace(standby.name_any());
    }
    // Only the active member is left on the old revision.
    let active = outdated[0];
    if members.len() == 1 {
        return Step::Replace(active.name_any());
    }
    if switchover_pending {
        return Step::Wait("a switch-over is under way".to_owned());
    }
    Step::SwitchOver(SWITCHOVER_TO_ANY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, revision: &str, role: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {REVISION_LABEL: revision, LABEL_ROLE: role}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .expect("pod")
    }

    #[test]
    fn without_an_active_member_outdated_pods_are_replaced_without_waiting() {
        let stuck = [
            pod("joc-0", "r1", "standby", false),
            pod("joc-1", "r1", "standby", false),
        ];
        assert_eq!(
            next_step(&stuck, Some("r2"), 2, false),
            Step::Replace("joc-0".into())
        );
        let mut deleting = pod("joc-0", "r1", "standby", false);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let one_deleting = [deleting.clone(), pod("joc-1", "r1", "standby", false)];
        assert_eq!(
            next_step(&one_deleting, Some("r2"), 2, false),
            Step::Replace("joc-1".into())
        );
        let second = [deleting, pod("joc-1", "r2", "standby", false)];
        assert!(matches!(
            next_step(&second, Some("r2"), 2, false),
            Step::Wait(_)
        ));
        // A fail-over under way (no active label, Ready pods): wait.
        let failing_over = [
            pod("joc-0", "r1", "standby", true),
            pod("joc-1", "r1", "standby", false),
        ];
        assert!(matches!(
            next_step(&failing_over, Some("r2"), 2, false),
            Step::Wait(_)
        ));
        // With an active member, a not-Ready pod still makes the rollout wait.
        let active = [
            pod("joc-0", "r1", "active", true),
            pod("joc-1", "r1", "standby", false),
        ];
        assert!(matches!(
            next_step(&active, Some("r2"), 2, false),
            Step::Wait(_)
        ));
    }

    #[test]
    fn standbys_first_then_switchover_then_the_old_active() {
        let old = [
            pod("joc-0", "r1", "active", true),
            pod("joc-1", "r1", "standby", true),
            pod("joc-2", "r1", "standby", true),
        ];
        assert_eq!(
            next_step(&old, Some("r2"), 3, false),
            Step::Replace("joc-1".into())
        );
        let one_new = [
            pod("joc-0", "r1", "active", true),
            pod("joc-1", "r2", "standby", true),
            pod("joc-2", "r1", "standby", true),
        ];
        assert_eq!(
            next_step(&one_new, Some("r2"), 3, false),
            Step::Replace("joc-2".into())
        );
        let standbys_new = [
            pod("joc-0", "r1", "active", true),
            pod("joc-1", "r2", "standby", true),
            pod("joc-2", "r2", "standby", true),
        ];
        assert_eq!(
            next_step(&standbys_new, Some("r2"), 3, false),
            Step::SwitchOver("any")
        );
        assert!(matches!(
            next_step(&standbys_new, Some("r2"), 3, true),
            Step::Wait(_)
        ));
        let switched = [
            pod("joc-0", "r1", "standby", true),
            pod("joc-1", "r2", "active", true),
            pod("joc-2", "r2", "standby", true),
        ];
        assert_eq!(
            next_step(&switched, Some("r2"), 3, false),
            Step::Replace("joc-0".into())
        );
        let done = [
            pod("joc-0", "r2", "standby", true),
            pod("joc-1", "r2", "active", true),
            pod("joc-2", "r2", "standby", true),
        ];
        assert_eq!(next_step(&done, Some("r2"), 3, false), Step::Done);
    }

    #[test]
    fn waits_while_a_member_is_not_ready_or_missing() {
        let starting = [
            pod("joc-0", "r1", "active", true),
            pod("joc-1", "r2", "standby", false),
        ];
        assert!(matches!(
            next_step(&starting, Some("r2"), 2, false),
            Step::Wait(_)
        ));
        let missing = [pod("joc-0", "r1", "active", true)];
        assert!(matches!(
            next_step(&missing, Some("r2"), 2, false),
            Step::Wait(_)
        ));
    }

    #[test]
    fn a_single_member_is_replaced_in_place() {
        let single = [pod("joc-0", "r1", "active", true)];
        assert_eq!(
            next_step(&single, Some("r2"), 1, false),
            Step::Replace("joc-0".into())
        );
    }
}
