//! `kubectl joc fence <pod>` / `unfence <pod>`: edits the JocCluster's
//! `joc-ha.dev/fenced-members` (see `joc_ha_crds::fencing`), which the pod's
//! sidecar acts on. Fencing the active member moves the lease first (its
//! sidecar hands it to the best ready standby), so the plugin refuses it
//! while no other member could take it. With `--wait` it waits for the
//! sidecar's `MemberFenced` / `MemberUnfenced` Event and, for the active
//! member, for another member to carry the active label.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use joc_ha_crds::JocCluster;
use joc_ha_crds::fencing::{fenced_members, render};
use joc_ha_crds::names::{
    ANNOTATION_FENCED_MEMBERS, COMPONENT_MEMBER, LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE,
    ROLE_ACTIVE, reason,
};
use joc_ha_crds::pods::is_ready;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::error::PluginError;

/// A member pod as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPod {
    pub name: String,
    pub active: bool,
    pub ready: bool,
    pub terminating: bool,
}

impl MemberPod {
    fn of(pod: &Pod) -> MemberPod {
        MemberPod {
            name: pod.name_any(),
            active: pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_ACTIVE),
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// What to write: the new list, or `None` if nothing changes (already so).
/// Fencing the active member needs another member that can take the lease:
/// Ready, not being deleted, not fenced.
pub fn plan(
    pod: &str,
    fence: bool,
    fenced: &BTreeSet<String>,
    members: &[MemberPod],
) -> Result<Option<BTreeSet<String>>, PluginError> {
    let mut next = fenced.clone();
    if !fence {
        return Ok(next.remove(pod).then_some(next));
    }
    if !next.insert(pod.to_owned()) {
        return Ok(None);
    }
    let active = members.iter().any(|m| m.name == pod && m.active);
    let others: Vec<&str> = members
        .iter()
        .filter(|m| m.name != pod && m.ready && !m.terminating && !next.contains(&m.name))
        .map(|m| m.name.as_str())
        .collect();
    if active && others.is_empty() {
        return Err(PluginError::NoOtherMember {
            pod: pod.to_owned(),
        });
    }
    Ok(Some(next))
}

pub async fn run(
    client: &kube::Client,
    namespace: &str,
    pod_name: &str,
    fence: bool,
    wait: Option<Duration>,
) -> Result<String, PluginError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get(pod_name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => PluginError::PodNotFound {
            namespace: namespace.to_owned(),
            pod: pod_name.to_owned(),
        },
        e => PluginError::from_kube(e, namespace, pod_name),
    })?;
    let cluster_name = pod.labels().get(LABEL_CLUSTER).cloned();
    let component = pod.labels().get(LABEL_COMPONENT).map(String::as_str);
    let (Some(cluster_name), Some(COMPONENT_MEMBER)) = (cluster_name, component) else {
        return Err(PluginError::NotAMemberPod {
            pod: pod_name.to_owned(),
            why: match component {
                Some(other) => format!("its label {LABEL_COMPONENT} is {other:?}"),
                None => format!("it has no label {LABEL_CLUSTER}/{LABEL_COMPONENT}"),
            },
        });
    };
    let clusters: Api<JocCluster> = Api::namespaced(client.clone(), namespace);
    let kube_error = |e| PluginError::from_kube(e, namespace, &cluster_name);
    let written = jiff::Timestamp::now();
    let started = Instant::now();
    // Optimistic concurrency: the patch names the resourceVersion it read,
    // so a concurrent edit of the list is not lost; read again on 409.
    let mut was_active = false;
    let mut changed = false;
    for attempt in 0.. {
        let cluster = clusters.get(&cluster_name).await.map_err(kube_error)?;
        let fenced =
            fenced_members(cluster.annotations()).map_err(|e| PluginError::MalformedFencing {
                error: e,
                name: cluster_name.clone(),
            })?;
        let members: Vec<MemberPod> = pods
            .list(&ListParams::default().labels(&format!(
                "{LABEL_CLUSTER}={cluster_name},{LABEL_COMPONENT}={COMPONENT_MEMBER}"
            )))
            .await
            .map_err(kube_error)?
            .items
            .iter()
            .map(MemberPod::of)
            .collect();
        was_active = members.iter().any(|m| m.name == pod_name && m.active);
        let Some(next) = plan(pod_name, fence, &fenced, &members)? else {
            break;
        };
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": cluster.resource_version(),
            "annotations": {ANNOTATION_FENCED_MEMBERS: render(&next)},
        }});
        match clusters
            .patch(
                &cluster_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                changed = true;
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => return Err(kube_error(e)),
        }
    }
    let verb = if fence { "fenced" } else { "unfenced" };
    let done = format!("{namespace}/{pod_name} (JocCluster {cluster_name}) {verb}");
    if !changed {
        return Ok(format!("{namespace}/{pod_name} is already {verb}"));
    }
    let Some(bound) = wait else {
        return Ok(format!(
            "{done}; `kubectl joc status {cluster_name}` shows when its sidecar has acted"
        ));
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let want = if fence {
        reason::MEMBER_FENCED
    } else {
        reason::MEMBER_UNFENCED
    };
    let waited = tokio::time::timeout(bound, async {
        loop {
            let seen = sidecar_said(&events, &cluster_name, want, pod_name, written).await?;
            let moved =
                !(fence && was_active) || lease_moved(&pods, &cluster_name, pod_name).await?;
            if seen && moved {
                return Ok::<_, PluginError>(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match waited {
        Ok(result) => result?,
        Err(_) => return Err(PluginError::Timeout(bound)),
    }
    let moved = if fence && was_active {
        ", the lease moved to another member"
    } else {
        ""
    };
    Ok(format!(
        "{done}: its sidecar acted{moved} (after {:.1} s)",
        started.elapsed().as_secs_f64()
    ))
}

/// Whether `pod`'s sidecar published `reason` about itself since `since`.
async fn sidecar_said(
    events: &Api<Event>,
    cluster: &str,
    reason: &str,
    pod: &str,
    since: jiff::Timestamp,
) -> Result<bool, PluginError> {
    let list = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=JocCluster,involvedObject.name={cluster},reason={reason}"
        )))
        .await
        .map_err(|e| PluginError::from_kube(e, "", cluster))?;
    // Seconds: Events keep whole-second timestamps.
    let since_s = since.as_second();
    Ok(list.items.iter().any(|e| {
        crate::status::last_seen(e).is_some_and(|t| t.as_second() >= since_s)
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("{pod} ")))
    }))
}

/// Whether a member other than `pod` carries the active label and `pod`
/// does not.
async fn lease_moved(pods: &Api<Pod>, cluster: &str, pod: &str) -> Result<bool, PluginError> {
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "{LABEL_CLUSTER}={cluster},{LABEL_COMPONENT}={COMPONENT_MEMBER},{LABEL_ROLE}={ROLE_ACTIVE}"
        )))
        .await
        .map_err(|e| PluginError::from_kube(e, "", cluster))?;
    let active: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
    Ok(!active.is_empty() && !active.iter().any(|a| a == pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, active: bool, ready: bool) -> MemberPod {
        MemberPod {
            name: name.into(),
            active,
            ready,
            terminating: false,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn what_fence_and_unfence_write() {
        let members = [
            m("joc-0", true, true),
            m("joc-1", false, true),
            m("joc-2", false, false),
        ];
        // (story, pod, fence, fenced before, result: new list, none, or the error)
        type Written<'a> = Result<Option<&'a [&'a str]>, &'a str>;
        let cases: Vec<(&str, &str, bool, &[&str], Written)> = vec![
            ("a standby", "joc-1", true, &[], Ok(Some(&["joc-1"]))),
            ("already fenced", "joc-1", true, &["joc-1"], Ok(None)),
            (
                "the active member, a ready standby left",
                "joc-0",
                true,
                &[],
                Ok(Some(&["joc-0"])),
            ),
            (
                "the active member, the only ready standby fenced",
                "joc-0",
                true,
                &["joc-1"],
                Err("no other member"),
            ),
            (
                "unfence",
                "joc-1",
                false,
                &["joc-0", "joc-1"],
                Ok(Some(&["joc-0"])),
            ),
            (
                "unfence the last",
                "joc-1",
                false,
                &["joc-1"],
                Ok(Some(&[])),
            ),
            (
                "unfence one not fenced",
                "joc-2",
                false,
                &["joc-1"],
                Ok(None),
            ),
        ];
        for (story, pod, fence, before, expected) in cases {
            let got = plan(pod, fence, &set(before), &members);
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want.map(set), "{story}"),
                (Err(got), Err(want)) => assert!(got.to_string().contains(want), "{story}: {got}"),
                (got, want) => panic!("{story}: got {got:?}, expected {want:?}"),
            }
        }
        // Being deleted does not count as able to take the lease.
        let leaving = [
            m("joc-0", true, true),
            MemberPod {
                terminating: true,
                ..m("joc-1", false, true)
            },
        ];
        assert!(plan("joc-0", true, &set(&[]), &leaving).is_err());
    }
}
