//! The reconcile of one JocCluster, as a pipeline:
//! read → validate → build (pure) → server-side apply → status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    ANNOTATION_SWITCHOVER_TO, COMPONENT_MEMBER, FIELD_MANAGER_OPERATOR, LABEL_CLUSTER,
    LABEL_COMPONENT, condition, members_statefulset_name, reason,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::apply::apply_all;
use crate::build::{BuildContext, desired, stamp_secret_versions};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::observe::observe;
use crate::rollout;
use crate::secret_refs::clusters_naming;
use crate::status::{Observed, Problem, compute_status, new_warnings};
use crate::validate::validate;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub build: BuildContext,
    /// One recorder for the operator's lifetime: it remembers the Events it
    /// published, so a problem seen at every retry becomes one Event whose
    /// series count grows, not a new Event every 10 s.
    recorder: Recorder,
    metrics: Metrics,
}

impl Context {
    pub fn new(client: Client, reporter: Reporter, build: BuildContext, metrics: Metrics) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            build,
            metrics,
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters: Api<JocCluster> = Api::all(client.clone());
    let config = watcher::Config::default().any_semantic();
    let by_cluster_label = watcher::Config::default().labels(LABEL_CLUSTER);
    let controller = Controller::new(clusters, config.clone());
    let known = controller.store();
    controller
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), config)
        // Pods change role and readiness without their owner changing.
        .watches(Api::<Pod>::all(client.clone()), by_cluster_label, |pod| {
            let cluster = pod.labels().get(LABEL_CLUSTER)?.clone();
            Some(ObjectRef::<JocCluster>::new(&cluster).within(&pod.namespace()?))
        })
        // A changed Secret (a fixed password) reconciles the clusters naming
        // it at once. Metadata only: no Secret value reaches the operator.
        .watches(
            Api::<PartialObjectMeta<Secret>>::all(client),
            watcher::Config::default(),
            move |secret| {
                let (Some(namespace), Some(name)) =
                    (secret.namespace(), secret.meta().name.clone())
                else {
                    return Vec::new();
                };
                clusters_naming(&known.state(), &namespace, &name)
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile failed");
            }
        })
        .await;
}

fn error_policy(_cluster: Arc<JocCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One reconciliation, counted and timed.
async fn reconcile(cluster: Arc<JocCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let result = reconcile_pipeline(cluster, ctx.clone()).await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    result
}

async fn reconcile_pipeline(cluster: Arc<JocCluster>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let recorder = &ctx.recorder;
    let reference = cluster.object_ref(&());

    // Read and validate: problems stop the rollout and show in status.
    let (mut problems, secret_versions) = validate(&ctx.client, &cluster, &namespace).await?;
    let mut action = "Validate";
    if problems.is_empty() {
        // Build and apply; a name another controller owns stops it.
        let mut desired = desired(&cluster, &ctx.build)?;
        stamp_secret_versions(&mut desired, &secret_versions);
        let conflicts = apply_all(&ctx.client, &cluster, &desired).await?;
        action = "Apply";
        problems.extend(conflicts.iter().map(|c| Problem {
            reason: reason::NAME_CONFLICT,
            message: c.message(&cluster.name_any()),
        }));
    }
    for problem in &problems {
        warn!(cluster = %cluster.name_any(), namespace, reason = problem.reason, "{}", problem.message);
        recorder
            .publish(
                &Event {
                    type_: EventType::Warning,
                    reason: problem.reason.to_owned(),
                    note: Some(problem.message.clone()),
                    action: action.to_owned(),
                    secondary: None,
                },
                &reference,
            )
            .await?;
    }

    // Roll out a changed pod template: standbys first, the active last.
    let mut observed = observe(&ctx.client, &cluster, &namespace).await?;
    if problems.is_empty() {
        observed.rolling_out = roll_out(&ctx, &cluster, &namespace, &observed).await?;
    }

    // Status, and a Warning Event for each notice that is new in it (no
    // license with several members, an unknown JOC release): one Event per
    // change, published before the status that records it.
    let status = compute_status(&cluster, &observed, &problems, Time(jiff::Timestamp::now()));
    let previous = cluster.status.clone().unwrap_or_default();
    for warning in new_warnings(&previous, &status) {
        warn!(cluster = %cluster.name_any(), namespace, reason = %warning.reason, "{}", warning.message);
        recorder
            .publish(
                &Event {
                    type_: EventType::Warning,
                    reason: warning.reason,
                    note: Some(warning.message),
                    action: "Validate".to_owned(),
                    secondary: None,
                },
                &reference,
            )
            .await?;
    }
    let api: Api<JocCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": "joc-ha.dev/v1alpha1",
        "kind": "JocCluster",
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(FIELD_MANAGER_OPERATOR).force(),
        &Patch::Apply(patch),
    )
    .await?;
    info!(cluster = %cluster.name_any(), namespace, phase = ?status.phase, active = ?status.active_member, "reconciled");

    // The watches (Secrets included) bring us back on a change; the
    // requeues cover what changes with time alone.
    let available = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition::AVAILABLE && c.status == "True");
    Ok(if observed.rolling_out {
        Action::requeue(Duration::from_secs(2))
    } else if !available {
        // Degraded turns on with time (the grace period), and fresh Events
        // age out: look again without waiting for a watch.
        Action::requeue(Duration::from_secs(15))
    } else if problems.is_empty() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(10))
    })
}

/// Takes the next rollout step; returns whether a rollout is under way.
async fn roll_out(
    ctx: &Context,
    cluster: &JocCluster,
    namespace: &str,
    observed: &Observed,
) -> Result<bool> {
    let name = cluster.name_any();
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(statefulset) = statefulsets
        .get_opt(&members_statefulset_name(&name))
        .await?
    else {
        return Ok(false);
    };
    let update_revision = statefulset
        .status
        .as_ref()
        .and_then(|s| s.update_revision.clone());
    let members: Vec<Pod> = observed
        .pods
        .iter()
        .filter(|p| p.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(COMPONENT_MEMBER))
        .cloned()
        .collect();
    let pending = cluster.annotations().contains_key(ANNOTATION_SWITCHOVER_TO);
    let step = rollout::next_step(
        &members,
        update_revision.as_deref(),
        cluster.spec.members,
        pending,
    );
    let reference = cluster.object_ref(&());
    let note = match &step {
        rollout::Step::Done => return Ok(false),
        rollout::Step::Wait(why) => {
            info!(cluster = %name, namespace, why, "rollout waiting");
            return Ok(true);
        }
        rollout::Step::Replace(pod) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            pods.delete(pod, &DeleteParams::default()).await?;
            format!("replacing {pod} with the updated pod template")
        }
        rollout::Step::SwitchOver(target) => {
            let clusters: Api<JocCluster> = Api::namespaced(ctx.client.clone(), namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_SWITCHOVER_TO: target}}});
            clusters
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            "every standby is updated: switching over so the old active member can be updated"
                .to_owned()
        }
    };
    info!(cluster = %name, namespace, "{note}");
    ctx.recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "RollingUpdate".to_owned(),
                note: Some(note),
                action: "RollOut".to_owned(),
                secondary: None,
            },
            &reference,
        )
        .await?;
    Ok(true)
}
