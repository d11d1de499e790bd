//! `kubectl joc restart`: restarts every pod of a JocCluster the way the
//! operator rolls an update — outdated standbys first, one at a time, then
//! a switch-over to a restarted standby, then the old active member
//! (operator/src/rollout.rs). It only stamps the StatefulSets' pod template
//! with a restart time (the annotation `kubectl rollout restart` writes);
//! the new revision is what starts the operator's rollout, so a restart
//! never takes the active member away before a standby is ready.

use std::time::{Duration, Instant};

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    LABEL_ROLE, ROLE_ACTIVE, api_server_statefulset_name, members_statefulset_name,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::error::PluginError;

/// The pod template annotation `kubectl rollout restart` writes.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The label the StatefulSet controller puts on each pod with its revision.
const REVISION_LABEL: &str = "controller-revision-hash";
const FIELD_MANAGER: &str = "kubectl-joc";

/// How far a restart has come, from the StatefulSet and its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every pod runs the new revision, is Ready, and (for the members)
    /// exactly one is labeled active.
    Done,
    /// Still rolling: what is missing, for the message on timeout.
    Rolling(String),
}

/// Judges one StatefulSet: `generation` is the one our patch produced;
/// `members` says whether exactly one Ready pod must carry the active label.
pub fn progress(sts: &StatefulSet, generation: i64, pods: &[Pod], members: bool) -> Progress {
    let status = sts.status.as_ref();
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    if observed < generation {
        return Progress::Rolling("the StatefulSet controller has not seen the restart yet".into());
    }
    let Some(revision) = status.and_then(|s| s.update_revision.as_deref()) else {
        return Progress::Rolling("the StatefulSet has no update revision yet".into());
    };
    let desired = sts.spec.replicas.unwrap_or(1);
    let current: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision)
        })
        .collect();
    let outdated: Vec<String> = pods
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) != Some(revision))
        .map(|p| p.name_any())
        .collect();
    if !outdated.is_empty() {
        return Progress::Rolling(format!("not restarted yet: {}", outdated.join(", ")));
    }
    if current.len() < desired as usize {
        return Progress::Rolling(format!("{} of {desired} pods are back", current.len()));
    }
    let not_ready: Vec<String> = current
        .iter()
        .filter(|p| !joc_ha_crds::pods::is_ready(p))
        .map(|p| p.name_any())
        .collect();
    if !not_ready.is_empty() {
        return Progress::Rolling(format!("not Ready yet: {}", not_ready.join(", ")));
    }
    if members {
        let active = current
            .iter()
            .filter(|p| p.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_ACTIVE))
            .count();
        if active != 1 {
            return Progress::Rolling(format!("{active} members labeled active"));
        }
    }
    Progress::Done
}

pub async fn run(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
) -> Result<String, PluginError> {
    let clusters: Api<JocCluster> = Api::namespaced(client.clone(), namespace);
    clusters
        .get(name)
        .await
        .map_err(|e| PluginError::from_kube(e, namespace, name))?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    // (StatefulSet, the generation our patch made, members?)
    let mut stamped = Vec::new();
    for (sts_name, members) in [
        (members_statefulset_name(name), true),
        (api_server_statefulset_name(name), false),
    ] {
        match statefulsets
            .patch(&sts_name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(sts) => stamped.push((sts_name, sts.metadata.generation.unwrap_or(0), members)),
            // No API servers: nothing to restart there.
            Err(kube::Error::Api(status)) if status.code == 404 && !members => {}
            Err(error) => return Err(PluginError::from_kube(error, namespace, &sts_name)),
        }
    }
    let names: Vec<&str> = stamped.iter().map(|(n, ..)| n.as_str()).collect();
    let Some(bound) = wait else {
        return Ok(format!(
            "restart of {namespace}/{name} requested ({}): the operator replaces the standbys first, then switches over and replaces the old active member; `kubectl joc status {name}` shows the progress",
            names.join(", ")
        ));
    };
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut last = String::new();
    loop {
        let mut done = true;
        for (sts_name, generation, members) in &stamped {
            let sts = statefulsets
                .get(sts_name)
                .await
                .map_err(|e| PluginError::from_kube(e, namespace, sts_name))?;
            let selector = sts
                .spec
                .selector
                .match_labels
                .as_ref()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| PluginError::from_kube(e, namespace, name))?;
            if let Progress::Rolling(why) = progress(&sts, *generation, &list.items, *members) {
                done = false;
                last = format!("{sts_name}: {why}");
                break;
            }
        }
        if done {
            return Ok(format!(
                "restarted {namespace}/{name} ({}) in {:.1} s; one member active",
                names.join(", "),
                started.elapsed().as_secs_f64()
            ));
        }
        if started.elapsed() >= bound {
            return Err(PluginError::RestartTimeout { after: bound, last });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn sts(observed: i64, revision: Option<&str>, replicas: i32) -> StatefulSet {
        StatefulSet {
            spec: StatefulSetSpec {
                replicas: Some(replicas),
                ..StatefulSetSpec::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                update_revision: revision.map(str::to_owned),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn pod(name: &str, revision: &str, ready: bool, active: bool) -> Pod {
        let mut labels = BTreeMap::from([(REVISION_LABEL.to_owned(), revision.to_owned())]);
        if active {
            labels.insert(LABEL_ROLE.to_owned(), ROLE_ACTIVE.to_owned());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": ObjectMeta { name: Some(name.into()), labels: Some(labels), ..ObjectMeta::default() },
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("a pod")
    }

    #[test]
    fn a_restart_is_done_when_every_pod_is_new_ready_and_one_is_active() {
        let new = |n: &str, active| pod(n, "new", true, active);
        let cases: Vec<(&str, StatefulSet, Vec<Pod>, bool, bool)> = vec![
            (
                "not observed",
                sts(1, Some("new"), 2),
                vec![new("a", true), new("b", false)],
                true,
                false,
            ),
            ("no revision", sts(2, None, 2), vec![], true, false),
            (
                "a pod still old",
                sts(2, Some("new"), 2),
                vec![new("a", true), pod("b", "old", true, false)],
                true,
                false,
            ),
            (
                "a pod missing",
                sts(2, Some("new"), 2),
                vec![new("a", true)],
                true,
                false,
            ),
            (
                "a pod not Ready",
                sts(2, Some("new"), 2),
                vec![new("a", true), pod("b", "new", false, false)],
                true,
                false,
            ),
            (
                "no member active",
                sts(2, Some("new"), 2),
                vec![new("a", false), new("b", false)],
                true,
                false,
            ),
            (
                "done",
                sts(2, Some("new"), 2),
                vec![new("a", true), new("b", false)],
                true,
                true,
            ),
            (
                "API servers: no active label",
                sts(2, Some("new"), 1),
                vec![new("api-0", false)],
                false,
                true,
            ),
        ];
        for (case, sts, pods, members, done) in cases {
            assert_eq!(
                progress(&sts, 2, &pods, members) == Progress::Done,
                done,
                "{case}"
            );
        }
    }
}
