//! Read what the status is computed from: the cluster's pods, the
//! endpoints of the active Service, recent Events.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    COMPONENT_API_SERVER, COMPONENT_MEMBER, LABEL_CLUSTER, LABEL_COMPONENT, active_service_name,
    api_server_statefulset_name, members_statefulset_name, reason,
};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::error::Result;
use crate::status::Observed;

pub(crate) async fn observe(
    client: &Client,
    cluster: &JocCluster,
    namespace: &str,
) -> Result<Observed> {
    let name = cluster.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={name}")))
        .await?
        .items;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let slices = slices
        .list(&ListParams::default().labels(&format!(
            "kubernetes.io/service-name={}",
            active_service_name(&name)
        )))
        .await?
        .items;
    let mut active_endpoints: Vec<String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect();
    active_endpoints.sort();
    active_endpoints.dedup();

    let count = |component: &str| {
        pods.iter()
            .filter(|p| p.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(component))
            .count()
    };
    let missing_pods = count(COMPONENT_MEMBER) < usize::try_from(cluster.spec.members).unwrap_or(0)
        || count(COMPONENT_API_SERVER) < usize::try_from(cluster.spec.api_servers).unwrap_or(0);
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now();
    let pod_create_failure = if missing_pods {
        let failed = events
            .list(
                &ListParams::default()
                    .fields("involvedObject.kind=StatefulSet,reason=FailedCreate"),
            )
            .await?
            .items;
        let ours = [
            members_statefulset_name(&name),
            api_server_statefulset_name(&name),
        ];
        latest_note(
            failed.iter().filter(|e| {
                e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| ours.contains(n))
            }),
            now,
        )
    } else {
        None
    };
    let mut sidecar_reports = Vec::new();
    for why in [reason::DATABASE_LOGIN_FAILED, reason::DATABASE_IN_USE] {
        let reported = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=JocCluster,involvedObject.name={name},reason={why}"
            )))
            .await?
            .items;
        sidecar_reports.push(latest_note(reported.iter(), now));
    }
    let database_in_use = sidecar_reports.pop().flatten();
    let database_login_failure = sidecar_reports.pop().flatten();
    Ok(Observed {
        pods,
        active_endpoints,
        rolling_out: false,
        pod_create_failure,
        database_login_failure,
        database_in_use,
    })
}

/// How long an Event counts as the current state: the sidecars repeat
/// theirs at every failed attempt, the StatefulSet controller at every
/// retry (its back-off stays below this).
const EVENT_FRESH_SECONDS: i64 = 120;

/// The note of the latest of `events` seen within [`EVENT_FRESH_SECONDS`].
fn latest_note<'a>(
    events: impl Iterator<Item = &'a CoreEvent>,
    now: jiff::Timestamp,
) -> Option<String> {
    events
        .filter_map(|e| Some((event_last_seen(e)?, e.message.clone()?)))
        .filter(|(seen, _)| now.as_second() - seen.as_second() <= EVENT_FRESH_SECONDS)
        .max_by_key(|(seen, _)| *seen)
        .map(|(_, message)| message)
}

/// When an Event was last seen, whichever API wrote it.
fn event_last_seen(event: &CoreEvent) -> Option<jiff::Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str, last_seen: i64) -> CoreEvent {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": message},
            "involvedObject": {},
            "message": message,
            "lastTimestamp": jiff::Timestamp::from_second(last_seen).expect("time").to_string(),
        }))
        .expect("event")
    }

    #[test]
    fn only_fresh_events_count_and_the_latest_wins() {
        let now = jiff::Timestamp::from_second(1_000).expect("time");
        let fresh = 1_000 - EVENT_FRESH_SECONDS;
        let cases: Vec<(Vec<CoreEvent>, Option<&str>)> = vec![
            (vec![], None),
            (vec![event("old", fresh - 1)], None),
            (vec![event("edge", fresh)], Some("edge")),
            (
                vec![event("a", 990), event("b", 995), event("c", 900)],
                Some("b"),
            ),
        ];
        for (events, want) in cases {
            assert_eq!(latest_note(events.iter(), now).as_deref(), want);
        }
    }
}
