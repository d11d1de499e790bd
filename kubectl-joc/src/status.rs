//! `kubectl joc status`: the cluster as its sidecars and the operator
//! publish it, in one view. Gathering is `gather`; everything else is pure.

use joc_ha_crds::JocCluster;
use joc_ha_crds::joc_view::JocViewNote;
use joc_ha_crds::names::{
    ANNOTATION_FAILSAFE, ANNOTATION_JOC_VIEW, ANNOTATION_LEASE_TERM, COMPONENT_API_SERVER,
    LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE,
};
use joc_ha_crds::pods::is_ready;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::error::PluginError;

/// How many of the cluster's latest Events the view shows.
const EVENTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub namespace: String,
    pub name: String,
    pub phase: Option<String>,
    pub active_member: Option<String>,
    pub lease_term: Option<i64>,
    pub members: Vec<PodView>,
    pub api_servers: Vec<PodView>,
    pub conditions: Vec<ConditionView>,
    pub last_switchover: Option<SwitchoverView>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    /// `active` / `standby` from the pod's role label, which the sidecars write.
    pub role: Option<String>,
    pub ready: bool,
    /// The lease term the sidecar acts under (the active member's only).
    pub lease_term: Option<i64>,
    /// The sidecar is acting on its last known role while the database is out of reach.
    pub failsafe: bool,
    /// Fenced by `kubectl joc fence`: it never takes or receives the lease.
    pub fenced: bool,
    pub restarts: i32,
    pub age_seconds: Option<i64>,
    /// js7: JOC's view as this member's sidecar last published it
    /// (`joc-ha.dev/joc-view`); `None` in generic mode, or before the first
    /// look.
    pub joc: Option<JocSeen>,
}

/// JOC's view from one member: the sidecar's note and how long ago it
/// looked, by this machine's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JocSeen {
    #[serde(flatten)]
    pub note: JocViewNote,
    pub looked_seconds_ago: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverView {
    pub from: Option<String>,
    pub to: String,
    pub result: String,
    pub message: Option<String>,
    pub age_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub age_seconds: Option<i64>,
}

fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> i64 {
    now.as_second() - then.as_second()
}

/// When an Event last happened: its series, its last timestamp, its event
/// time or its creation, whichever the writer filled.
pub(crate) fn last_seen(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn pod_view(pod: &Pod, now: jiff::Timestamp) -> PodView {
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    PodView {
        name: pod.name_any(),
        role: pod.labels().get(LABEL_ROLE).cloned(),
        ready: is_ready(pod),
        lease_term: pod
            .annotations()
            .get(ANNOTATION_LEASE_TERM)
            .and_then(|t| t.parse().ok()),
        failsafe: pod.annotations().contains_key(ANNOTATION_FAILSAFE),
        fenced: false,
        restarts,
        age_seconds: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| age(now, t.0)),
        joc: pod
            .annotations()
            .get(ANNOTATION_JOC_VIEW)
            .and_then(|text| JocViewNote::from_annotation(text))
            .map(|note| JocSeen {
                looked_seconds_ago: age(now, note.looked_at.0),
                note,
            }),
    }
}

/// The JOC ACTIVE and JOC HEARTBEAT cells: JOC's active member (`none`:
/// no JOC instance is active), and this member's instance heartbeat age at
/// the look with how long ago the look was; "—" without a JOC view.
fn joc_cells(joc: &Option<JocSeen>) -> (String, String) {
    match joc {
        None => ("—".into(), "—".into()),
        Some(seen) => (
            seen.note.member.clone().unwrap_or_else(|| "none".into()),
            format!(
                "{} ({} ago)",
                seconds(seen.note.instance_heart_beat_age_seconds),
                seconds(Some(seen.looked_seconds_ago))
            ),
        ),
    }
}

/// The view of `cluster`, its pods and its Events at `now`.
pub fn view(
    cluster: &JocCluster,
    pods: &[Pod],
    events: &[Event],
    now: jiff::Timestamp,
) -> StatusView {
    let status = cluster.status.clone().unwrap_or_default();
    let fenced = joc_ha_crds::fencing::fenced_now(cluster);
    let mut members = Vec::new();
    let mut api_servers = Vec::new();
    for pod in pods {
        let mut view = pod_view(pod, now);
        view.fenced = fenced.contains(&view.name);
        if pod.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(COMPONENT_API_SERVER) {
            api_servers.push(view);
        } else {
            members.push(view);
        }
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    api_servers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut recent: Vec<(Option<jiff::Timestamp>, &Event)> =
        events.iter().map(|e| (last_seen(e), e)).collect();
    recent.sort_by_key(|(t, _)| *t);
    let skip = recent.len().saturating_sub(EVENTS);
    StatusView {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
        phase: status.phase.map(|p| format!("{p:?}")),
        active_member: status.active_member.clone(),
        lease_term: status.lease_term,
        members,
        api_servers,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
        last_switchover: status.last_switchover.as_ref().map(|s| SwitchoverView {
            from: s.from.clone(),
            to: s.to.clone(),
            result: format!("{:?}", s.result),
            message: s.message.clone(),
            age_seconds: s.completed.as_ref().map(|t| age(now, t.0)),
        }),
        events: recent
            .into_iter()
            .skip(skip)
            .map(|(t, e)| EventView {
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                count: e.count.unwrap_or(1).max(1),
                age_seconds: t.map(|t| age(now, t)),
            })
            .collect(),
    }
}

fn seconds(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120 => format!("{}s", s.max(0)),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86400),
    }
}

/// The view as a kubectl-style text.
pub fn render(v: &StatusView) -> String {
    let mut out = String::new();
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "JocCluster {}/{}: {}, active member {}, lease term {}\n",
        v.namespace,
        v.name,
        dash(&v.phase),
        dash(&v.active_member),
        v.lease_term.map_or("-".into(), |t| t.to_string())
    ));
    let table = |out: &mut String, title: &str, pods: &[PodView]| {
        if pods.is_empty() {
            return;
        }
        out.push_str(&format!(
            "\n{title}\n{:<28} {:<8} {:<6} {:<6} {:<9} {:<7} {:<9} {:<6} {:<28} {}\n",
            "NAME",
            "ROLE",
            "READY",
            "TERM",
            "FAILSAFE",
            "FENCED",
            "RESTARTS",
            "AGE",
            "JOC ACTIVE",
            "JOC HEARTBEAT"
        ));
        for p in pods {
            let (joc_active, joc_heartbeat) = joc_cells(&p.joc);
            out.push_str(&format!(
                "{:<28} {:<8} {:<6} {:<6} {:<9} {:<7} {:<9} {:<6} {:<28} {}\n",
                p.name,
                dash(&p.role),
                p.ready,
                p.lease_term.map_or("-".into(), |t| t.to_string()),
                if p.failsafe { "yes" } else { "no" },
                if p.fenced { "yes" } else { "no" },
                p.restarts,
                seconds(p.age_seconds),
                joc_active,
                joc_heartbeat
            ));
        }
    };
    table(&mut out, "MEMBERS", &v.members);
    table(&mut out, "API SERVERS", &v.api_servers);
    if !v.conditions.is_empty() {
        out.push_str(&format!(
            "\nCONDITIONS\n{:<12} {:<7} {:<24} {}\n",
            "TYPE", "STATUS", "REASON", "MESSAGE"
        ));
        for c in &v.conditions {
            out.push_str(&format!(
                "{:<12} {:<7} {:<24} {}\n",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    match &v.last_switchover {
        Some(s) => out.push_str(&format!(
            "\nLAST SWITCH-OVER\n{} {} → {} ({} ago): {}\n",
            s.result,
            dash(&s.from),
            s.to,
            seconds(s.age_seconds),
            dash(&s.message)
        )),
        None => out.push_str("\nLAST SWITCH-OVER\nnone\n"),
    }
    if !v.events.is_empty() {
        out.push_str(&format!(
            "\nEVENTS\n{:<6} {:<8} {:<22} {}\n",
            "AGE", "TYPE", "REASON", "MESSAGE"
        ));
        for e in &v.events {
            let count = if e.count > 1 {
                format!(" (×{})", e.count)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:<6} {:<8} {:<22} {}{}\n",
                seconds(e.age_seconds),
                e.type_,
                e.reason,
                e.message,
                count
            ));
        }
    }
    out
}

/// Reads the cluster, its pods and its Events.
pub async fn gather(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<StatusView, PluginError> {
    let kube_error = |e| PluginError::from_kube(e, namespace, name);
    let cluster = Api::<JocCluster>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(kube_error)?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={name}")))
        .await
        .map_err(kube_error)?
        .items;
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=JocCluster,involvedObject.name={name}"
        )))
        .await
        .map_err(kube_error)?
        .items;
    Ok(view(&cluster, &pods, &events, jiff::Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use joc_ha_crds::JocClusterStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("valid"))
    }

    fn pod(
        name: &str,
        component: &str,
        role: Option<&str>,
        term: Option<&str>,
        ready: bool,
    ) -> Pod {
        let mut labels = serde_json::json!({LABEL_CLUSTER: "joc", LABEL_COMPONENT: component});
        if let Some(role) = role {
            labels[LABEL_ROLE] = role.into();
        }
        let mut annotations = serde_json::json!({});
        if let Some(term) = term {
            annotations[ANNOTATION_LEASE_TERM] = term.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations,
                         "creationTimestamp": "1970-01-01T00:16:40Z"},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                       "containerStatuses": [
                           {"name": "joc", "image": "i", "imageID": "", "ready": ready, "restartCount": 2},
                           {"name": "joc-ha-sidecar", "image": "s", "imageID": "", "ready": ready, "restartCount": 1}]}
        }))
        .expect("a pod")
    }

    fn event(reason: &str, at: i64, count: i32) -> Event {
        Event {
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
            type_: Some("Normal".into()),
            count: Some(count),
            last_timestamp: Some(t(at)),
            ..Event::default()
        }
    }

    #[test]
    fn members_api_servers_and_the_latest_events() {
        let mut cluster: JocCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster",
            "metadata": {"name": "joc", "namespace": "js7"},
            "spec": {"image": "i", "database": {"type": "postgresql", "secretRef": {"name": "db"}}}
        }))
        .expect("a JocCluster");
        cluster.annotations_mut().insert(
            joc_ha_crds::names::ANNOTATION_FENCED_MEMBERS.into(),
            r#"["joc-0"]"#.into(),
        );
        cluster.status = Some(JocClusterStatus {
            active_member: Some("joc-1".into()),
            lease_term: Some(7),
            ..JocClusterStatus::default()
        });
        let mut active = pod("joc-1", "member", Some("active"), Some("7"), true);
        active.annotations_mut().insert(
            ANNOTATION_JOC_VIEW.into(),
            r#"{"memberId":"joc-1:97c8","member":"joc-1","clusterHeartBeatAgeSeconds":1,"instanceHeartBeatAgeSeconds":2,"lookedAt":"1970-01-01T00:33:10Z"}"#.into(),
        );
        let pods = [
            active,
            pod("joc-api-0", "api-server", None, None, true),
            pod(
                "joc-0",
                "member",
                Some("standby"),
                Some("not a number"),
                false,
            ),
        ];
        let events: Vec<Event> = (0..15)
            .map(|i| event(&format!("E{i:02}"), 2000 - i, 1))
            .collect();
        let v = view(
            &cluster,
            &pods,
            &events,
            jiff::Timestamp::from_second(2000).expect("t"),
        );
        let names: Vec<&str> = v.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["joc-0", "joc-1"],
            "members by name, API servers apart"
        );
        assert_eq!(v.api_servers.len(), 1);
        assert_eq!(v.members[1].lease_term, Some(7));
        assert_eq!(
            v.members[0].lease_term, None,
            "a bad annotation is shown as none"
        );
        assert_eq!(v.members[0].restarts, 3, "restarts of all containers");
        assert_eq!(v.members[0].age_seconds, Some(1000));
        assert_eq!(v.events.len(), EVENTS);
        assert_eq!(
            v.events.last().map(|e| e.reason.as_str()),
            Some("E00"),
            "newest last"
        );
        assert!(
            v.events.iter().all(|e| e.reason.as_str() <= "E09"),
            "the oldest five left out"
        );
        let text = render(&v);
        assert!(text.contains("active member joc-1, lease term 7"), "{text}");
        assert!(text.contains("API SERVERS"), "{text}");
        assert!(
            text.contains("joc-1                        active   true   7      no        no      3         16m    joc-1                        2s (10s ago)"),
            "JOC's view, its heartbeat age at the look and the look's age: {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("joc-0 ") && l.ends_with("—                            —")),
            "no JOC view (generic mode): {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("joc-0 ") && l.contains(" no        yes     3 ")),
            "joc-0 fenced by the annotation: {text}"
        );
        assert!(v.members[0].fenced && !v.members[1].fenced);
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(json["members"][1]["leaseTerm"], 7);
        assert_eq!(json["members"][1]["joc"]["member"], "joc-1");
        assert_eq!(json["members"][1]["joc"]["instanceHeartBeatAgeSeconds"], 2);
        assert_eq!(json["members"][1]["joc"]["lookedSecondsAgo"], 10);
        assert_eq!(json["members"][0]["joc"], serde_json::Value::Null);
        assert_eq!(json["events"][0]["type"], "Normal");
    }

    #[test]
    fn ages_read_like_kubectls() {
        for (s, want) in [
            (None, "-"),
            (Some(-3), "0s"),
            (Some(59), "59s"),
            (Some(600), "10m"),
            (Some(7200), "2h"),
            (Some(200_000), "2d"),
        ] {
            assert_eq!(seconds(s), want);
        }
    }
}
