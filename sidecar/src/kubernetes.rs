//! What the sidecar does in Kubernetes: the role label of its own pod and of
//! stale active pods, the switch-over annotation and status, and Events on
//! the JocCluster. Only its own namespace; only the calls its Role allows.
//!
//! [`ClusterApi::write_role_label`] is the one place that writes the role
//! label; every write goes out under the sidecar's field manager.

use axum::http;
use joc_ha_crds::JocCluster;
pub use joc_ha_crds::names::{ANNOTATION_FAILSAFE, ANNOTATION_LEASE_TERM};
use joc_ha_crds::names::{
    ANNOTATION_JOC_VIEW, ANNOTATION_SWITCHOVER_TO, FIELD_MANAGER_SIDECAR, LABEL_CLUSTER,
    LABEL_COMPONENT, LABEL_ROLE, pod,
};
use joc_ha_crds::v1alpha1::SwitchoverStatus;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::decide::{OwnPodFacts, PodFacts};
use crate::js7::ContainerRun;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot reach the Kubernetes API: {0}; check the pod's service account token and network"
    )]
    Connect(#[source] kube::Error),
    #[error("Kubernetes API call {what} failed: {source}; it is retried")]
    Call {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn call(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let what = what.into();
    move |source| KubeError::Call { what, source }
}

/// A client for the API server of the pod's kubeconfig or service account
/// (as `Client::try_default`) that counts every request it sends in
/// `requests`.
pub async fn counting_client(
    requests: prometheus_client::metrics::counter::Counter,
) -> Result<Client, KubeError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| KubeError::Connect(kube::Error::InferConfig(e)))?;
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(KubeError::Connect)?
        .with_layer(&count_requests(requests))
        .build())
}

/// A tower layer that counts the requests passing through it.
fn count_requests<B>(
    requests: prometheus_client::metrics::counter::Counter,
) -> tower::util::MapRequestLayer<impl Fn(http::Request<B>) -> http::Request<B> + Clone> {
    tower::util::MapRequestLayer::new(move |request: http::Request<B>| {
        requests.inc();
        request
    })
}

/// The Kubernetes side of one sidecar.
#[derive(Clone)]
pub struct ClusterApi {
    namespace: String,
    cluster: String,
    pod_name: String,
    pods: Api<Pod>,
    clusters: Api<JocCluster>,
    /// One recorder for the sidecar's life, so that repeated Events form a
    /// series instead of new objects.
    recorder: Recorder,
}

/// Patches from the sidecar, under its field manager.
fn sidecar_patch() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER_SIDECAR.to_owned()),
        ..PatchParams::default()
    }
}

impl ClusterApi {
    pub fn new(client: Client, namespace: &str, cluster: &str, pod_name: &str) -> ClusterApi {
        ClusterApi {
            pods: Api::namespaced(client.clone(), namespace),
            clusters: Api::namespaced(client.clone(), namespace),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: FIELD_MANAGER_SIDECAR.into(),
                    instance: Some(pod_name.to_owned()),
                },
            ),
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
            pod_name: pod_name.to_owned(),
        }
    }

    pub fn pods(&self) -> &Api<Pod> {
        &self.pods
    }

    pub fn clusters(&self) -> &Api<JocCluster> {
        &self.clusters
    }

    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    /// Label selector of this cluster's pods.
    pub fn cluster_selector(&self) -> String {
        format!("{LABEL_CLUSTER}={}", self.cluster)
    }

    /// Sets a pod's role label (and its lease-term annotation, on our own
    /// pod, where the failsafe mark goes too). A pod that is gone is no
    /// error: it routes nowhere. The only writer of the role label.
    pub async fn write_role_label(
        &self,
        pod: &str,
        role: &str,
        term: Option<i64>,
    ) -> Result<(), KubeError> {
        let mut patch = json!({"metadata": {"labels": {LABEL_ROLE: role}}});
        if pod == self.pod_name {
            patch["metadata"]["annotations"] = json!({
                ANNOTATION_LEASE_TERM: term.map(|t| t.to_string()),
                ANNOTATION_FAILSAFE: null,
            });
        } else if term.is_none() {
            // Another pod made standby: its lease term is over too (its
            // own sidecar may be gone). Its failsafe mark stays: the new
            // holder watches that mark go (the former holder noticed).
            patch["metadata"]["annotations"] = json!({ANNOTATION_LEASE_TERM: null});
        }
        match self
            .pods
            .patch(pod, &sidecar_patch(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(call(format!("label pod {pod} {LABEL_ROLE}={role}"))(e)),
        }
    }

    /// Reads this pod from the API server (`None`: gone).
    pub async fn own_pod(&self) -> Result<Option<Pod>, KubeError> {
        self.pods
            .get_opt(&self.pod_name)
            .await
            .map_err(call("read this pod"))
    }

    /// Marks our own pod as active in failsafe mode.
    pub async fn mark_failsafe(&self) -> Result<(), KubeError> {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_FAILSAFE: "true"}}});
        self.pods
            .patch(&self.pod_name, &sidecar_patch(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(call("mark this pod failsafe"))
    }

    /// js7: publishes JOC's view on our own pod (`ANNOTATION_JOC_VIEW`).
    pub async fn write_joc_view(&self, note: &str) -> Result<(), KubeError> {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_JOC_VIEW: note}}});
        self.pods
            .patch(&self.pod_name, &sidecar_patch(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(call("publish JOC's view on this pod"))
    }

    /// Reads the cluster's pods from the API server itself (not a cache):
    /// a success proves the API is reachable now.
    pub async fn list_pods_now(&self) -> Result<Vec<Pod>, KubeError> {
        self.pods
            .list(&kube::api::ListParams::default().labels(&self.cluster_selector()))
            .await
            .map(|list| list.items)
            .map_err(call("list the cluster's pods"))
    }

    /// Whether a pod (read from the API server) is in failsafe mode.
    pub async fn is_failsafe(&self, pod: &str) -> Result<bool, KubeError> {
        match self.pods.get_opt(pod).await {
            Ok(Some(pod)) => Ok(pod.annotations().contains_key(ANNOTATION_FAILSAFE)),
            Ok(None) => Ok(false),
            Err(e) => Err(call(format!("read pod {pod}"))(e)),
        }
    }

    /// Records a switch-over outcome in the JocCluster's status, unless the
    /// status already holds a later request (`supersedes` decides); the
    /// check and the write are one step (the write is conditional on the
    /// resourceVersion read). The operator's fields are untouched
    /// (server-side apply, own manager). The times are written to the
    /// nanosecond (the schema's date-time allows it), so that requests of
    /// one second are ordered. True if written.
    pub async fn record_switchover(
        &self,
        outcome: &SwitchoverStatus,
        supersedes: impl Fn(&SwitchoverStatus, Option<&SwitchoverStatus>) -> bool,
    ) -> Result<bool, KubeError> {
        let mut record = serde_json::to_value(outcome)
            .map_err(|e| call("encode lastSwitchover")(kube::Error::SerdeError(e)))?;
        for (key, time) in [
            ("requested", outcome.requested.as_ref()),
            ("completed", outcome.completed.as_ref()),
        ] {
            if let Some(time) = time {
                record[key] = json!(time.0.to_string());
            }
        }
        for _ in 0..10 {
            let cluster = match self.clusters.get_opt(&self.cluster).await {
                Ok(Some(cluster)) => cluster,
                Ok(None) => return Ok(false),
                Err(e) => return Err(call("read the JocCluster")(e)),
            };
            let recorded = cluster
                .status
                .as_ref()
                .and_then(|s| s.last_switchover.as_ref());
            if !supersedes(outcome, recorded) {
                return Ok(false);
            }
            let patch = json!({
                "apiVersion": "joc-ha.dev/v1alpha1",
                "kind": "JocCluster",
                "metadata": {"resourceVersion": cluster.resource_version()},
                "status": {"lastSwitchover": record},
            });
            match self
                .clusters
                .patch_status(
                    &self.cluster,
                    &PatchParams::apply(FIELD_MANAGER_SIDECAR).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(call("record lastSwitchover")(e)),
            }
        }
        Err(KubeError::Call {
            what: "record lastSwitchover (the JocCluster kept changing)".to_owned(),
            source: kube::Error::Service("10 conflicting writes in a row".into()),
        })
    }

    /// Removes the switch-over annotation if it still asks for `value`; a
    /// newer request stays and is handled next.
    pub async fn clear_switchover(&self, value: &str) -> Result<bool, KubeError> {
        self.set_switchover_if(
            |current| current == Some(value),
            None,
            "remove the switch-over annotation",
        )
        .await
    }

    /// Sets the switch-over annotation to `value` unless one is there (a
    /// newer request wins); true if set.
    pub async fn restore_switchover(&self, value: &str) -> Result<bool, KubeError> {
        self.set_switchover_if(
            |current| current.is_none(),
            Some(value),
            "put the switch-over annotation back",
        )
        .await
    }

    /// Sets the switch-over annotation to `new` (None: removes it) if
    /// `applies` to its current value; true if written. Optimistic
    /// concurrency: the write is conditional on the resourceVersion just
    /// read, and is judged again after a conflict.
    async fn set_switchover_if(
        &self,
        applies: impl Fn(Option<&str>) -> bool,
        new: Option<&str>,
        what: &'static str,
    ) -> Result<bool, KubeError> {
        for _ in 0..10 {
            let cluster = match self.clusters.get_opt(&self.cluster).await {
                Ok(Some(cluster)) => cluster,
                Ok(None) => return Ok(false),
                Err(e) => return Err(call("read the JocCluster")(e)),
            };
            let current = cluster
                .annotations()
                .get(ANNOTATION_SWITCHOVER_TO)
                .map(String::as_str);
            if !applies(current) {
                return Ok(false);
            }
            let patch = json!({"metadata": {
                "resourceVersion": cluster.resource_version(),
                "annotations": {ANNOTATION_SWITCHOVER_TO: new},
            }});
            match self
                .clusters
                .patch(&self.cluster, &sidecar_patch(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
                Err(e) => return Err(call(what)(e)),
            }
        }
        Ok(false)
    }

    /// Publishes an Event on the JocCluster, as `kubectl describe joc` shows.
    pub async fn event(
        &self,
        cluster: &JocCluster,
        warning: bool,
        reason: &str,
        note: String,
    ) -> Result<(), KubeError> {
        let reference: ObjectReference = cluster.object_ref(&());
        self.recorder
            .publish(
                &Event {
                    type_: if warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.to_owned(),
                    action: event_action(reason, &note),
                    note: Some(note),
                    secondary: None,
                },
                &reference,
            )
            .await
            .map_err(call(format!("publish Event {reason}")))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// The Event's `action`, which kube's recorder uses (with the reason, not
/// the note) to group repeats into one series: the reason plus a digest of
/// the note, so that the same message repeated is one Event with a count,
/// and a different message (another rejection reason, another term) is an
/// Event of its own instead of a repeat of the first one's note.
fn event_action(reason: &str, note: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut hasher);
    format!("{reason}-{:016x}", hasher.finish())
}

pub use joc_ha_crds::pods::is_ready;

/// The role label a pod carries now.
pub fn role_label(pod: &Pod) -> Option<&str> {
    pod.labels().get(LABEL_ROLE).map(String::as_str)
}

/// What decisions need of a pod.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    PodFacts {
        name: pod.name_any(),
        component: pod.labels().get(LABEL_COMPONENT).cloned(),
        role: role_label(pod).map(str::to_owned),
        ready: is_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        failsafe: pod.annotations().contains_key(ANNOTATION_FAILSAFE),
        joc_run: joc_run(pod),
        sidecar_run: container_run(pod, pod::SIDECAR_CONTAINER),
    }
}

/// What decisions need of this sidecar's own pod.
pub fn own_pod_facts(pod: &Pod) -> OwnPodFacts {
    OwnPodFacts {
        terminating: pod.metadata.deletion_timestamp.is_some(),
        cluster: pod.labels().get(LABEL_CLUSTER).cloned(),
        component: pod.labels().get(LABEL_COMPONENT).cloned(),
        controlled: pod
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true)),
        joc_run: joc_run(pod),
    }
}

/// The run of the pod's `joc` container.
pub fn joc_run(pod: &Pod) -> ContainerRun {
    container_run(pod, pod::COCKPIT_CONTAINER)
}

/// The run of the pod's container `name` (a main container, or a native
/// sidecar among the init containers): its restart count and start time
/// name it; not running while it is terminated or waiting.
pub fn container_run(pod: &Pod, name: &str) -> ContainerRun {
    let Some(status) = pod.status.as_ref().and_then(|s| {
        [&s.container_statuses, &s.init_container_statuses]
            .into_iter()
            .flatten()
            .flatten()
            .find(|c| c.name == name)
    }) else {
        return ContainerRun::Unknown;
    };
    match status.state.as_ref().and_then(|s| s.running.as_ref()) {
        Some(running) => ContainerRun::Running(format!(
            "{}@{}",
            status.restart_count,
            running
                .started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        )),
        None => ContainerRun::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_counter_counts_every_request() {
        use tower::{Layer, ServiceExt};
        let requests = prometheus_client::metrics::counter::Counter::<u64>::default();
        let service = count_requests(requests.clone()).layer(tower::service_fn(
            |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(()) },
        ));
        for _ in 0..3 {
            service
                .clone()
                .oneshot(http::Request::new(()))
                .await
                .expect("infallible");
        }
        assert_eq!(requests.get(), 3);
    }

    fn pod(name: &str, role: Option<&str>) -> Pod {
        let mut labels = json!({LABEL_CLUSTER: "joc", LABEL_COMPONENT: "member"});
        if let Some(role) = role {
            labels[LABEL_ROLE] = role.into();
        }
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("pod")
    }

    #[test]
    fn repeated_events_form_a_series_but_different_notes_do_not() {
        let first = event_action("SwitchoverRejected", "joc-9 is not a member");
        assert_eq!(
            first,
            event_action("SwitchoverRejected", "joc-9 is not a member")
        );
        assert_ne!(
            first,
            event_action("SwitchoverRejected", "joc-api-0 is an API server")
        );
        assert!(first.starts_with("SwitchoverRejected-"));
        // events.k8s.io/v1 allows at most 128 characters.
        assert!(event_action(&"R".repeat(100), "note").len() <= 128);
    }

    #[test]
    fn pod_facts_read_labels_and_conditions() {
        let mut ready = pod("joc-0", Some("active"));
        ready.status =
            serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True"}]}))
                .expect("status");
        let facts = pod_facts(&ready);
        assert_eq!(facts.name, "joc-0");
        assert!(facts.is_member() && facts.is_labeled_active() && facts.ready);
        assert!(!facts.terminating);
        let bare = pod_facts(&pod("joc-1", None));
        assert_eq!(bare.role, None);
        assert!(!bare.ready);
    }
}
