//! The reconcile of one JocCluster, as a pipeline:
//! read → validate → build (pure) → server-side apply → status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    ANNOTATION_SWITCHOVER_TO, COMPONENT_API_SERVER, COMPONENT_MEMBER, FIELD_MANAGER_OPERATOR,
    LABEL_CLUSTER, LABEL_COMPONENT, active_service_name, api_server_statefulset_name, condition,
    license_key, members_statefulset_name, pod as pod_names, reason, secret_key,
};
use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams};
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
use crate::rollout;
use crate::secret_refs::clusters_naming;
use crate::status::{Observed, Problem, compute_status, new_warnings};

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

/// Checks what the API server's schema cannot: that the Secrets the spec
/// names exist with the keys they need (the database Secret a URL or all
/// the parts; the license Secret `js7-license.jar` and a key file; the CA
/// Secret `ca.crt`). Reads key names only, never the values. Also returns
/// the Secrets' versions for [`stamp_secret_versions`].
async fn validate(
    client: &Client,
    cluster: &JocCluster,
    namespace: &str,
) -> Result<(Vec<Problem>, String)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut problems = Vec::new();
    let mut versions = Vec::new();
    let secret_name = &cluster.spec.database.secret_ref.name;
    let database = secrets.get_opt(secret_name).await?;
    versions.push(("db", database.as_ref().and_then(|s| s.resource_version())));
    match database.as_ref().map(secret_key_names) {
        None => problems.push(Problem {
            reason: reason::SECRET_MISSING,
            message: Error::SecretMissing {
                namespace: namespace.to_owned(),
                name: secret_name.clone(),
            }
            .to_string(),
        }),
        Some(keys) => {
            if let Some(missing) = missing_database_keys(&keys) {
                problems.push(Problem {
                    reason: reason::SECRET_MISSING,
                    message: Error::SecretIncomplete {
                        name: secret_name.clone(),
                        missing,
                    }
                    .to_string(),
                });
            }
        }
    }
    if let Some(ca) = cluster
        .spec
        .database
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
    {
        let secret = secrets.get_opt(&ca.name).await?;
        versions.push(("ca", secret.as_ref().and_then(|s| s.resource_version())));
        let keys = secret.as_ref().map(secret_key_names);
        if !keys.is_some_and(|k| k.iter().any(|k| k == pod_names::DATABASE_CA_KEY)) {
            problems.push(Problem {
                reason: reason::SECRET_MISSING,
                message: Error::CaSecret {
                    namespace: namespace.to_owned(),
                    name: ca.name.clone(),
                }
                .to_string(),
            });
        }
    }
    if let (Some(license), WorkloadMode::Js7) = (&cluster.spec.license, cluster.spec.workload.mode)
    {
        let secret = secrets.get_opt(&license.secret_ref.name).await?;
        versions.push((
            "license",
            secret.as_ref().and_then(|s| s.resource_version()),
        ));
        let keys = secret.as_ref().map(secret_key_names);
        if let Some(problem) = license_problem(keys.as_deref()) {
            problems.push(Problem {
                reason: reason::LICENSE_SECRET_MISSING,
                message: Error::LicenseSecret {
                    namespace: namespace.to_owned(),
                    name: license.secret_ref.name.clone(),
                    problem,
                }
                .to_string(),
            });
        }
    }
    Ok((problems, secret_versions(&versions)))
}

/// `db=812,license=77`: the value of the pod templates' Secret-versions
/// annotation (a missing Secret is a problem, so it never gets there).
fn secret_versions(versions: &[(&str, Option<String>)]) -> String {
    versions
        .iter()
        .map(|(what, version)| format!("{what}={}", version.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The key names of a Secret.
fn secret_key_names(secret: &Secret) -> Vec<String> {
    secret
        .data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(secret.string_data.iter().flat_map(|d| d.keys().cloned()))
        .collect()
}

/// What the database Secret lacks: `None` when it has `url` or every part.
fn missing_database_keys(keys: &[String]) -> Option<String> {
    let has = |key: &str| keys.iter().any(|k| k == key);
    if has(secret_key::URL) {
        return None;
    }
    let missing: Vec<&str> = [
        secret_key::HOST,
        secret_key::DATABASE,
        secret_key::USER,
        secret_key::PASSWORD,
    ]
    .into_iter()
    .filter(|key| !has(key))
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// What is wrong with the license Secret (its key names), if anything.
fn license_problem(keys: Option<&[String]>) -> Option<String> {
    let Some(keys) = keys else {
        return Some("does not exist".to_owned());
    };
    if !keys.iter().any(|k| k == license_key::JAR) {
        return Some(format!("has no key {}", license_key::JAR));
    }
    if keys.iter().all(|k| k == license_key::JAR) {
        return Some(format!(
            "has no license key file besides {}",
            license_key::JAR
        ));
    }
    None
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

async fn observe(client: &Client, cluster: &JocCluster, namespace: &str) -> Result<Observed> {
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

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

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

    #[test]
    fn secret_versions_name_each_secret() {
        assert_eq!(
            secret_versions(&[("db", Some("12".into())), ("license", Some("7".into()))]),
            "db=12,license=7"
        );
        assert_eq!(secret_versions(&[("db", None)]), "db=");
    }

    #[test]
    fn database_secret_keys() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["url"], None),
            (&["host", "database", "user", "password"], None),
            (&["host", "port", "database", "user", "password"], None),
            (&["host", "user"], Some("database, password")),
            (&[], Some("host, database, user, password")),
        ];
        for (names, want) in cases {
            assert_eq!(
                missing_database_keys(&keys(names)).as_deref(),
                *want,
                "{names:?}"
            );
        }
    }

    #[test]
    fn license_secret_keys() {
        let cases: &[(Option<&[&str]>, Option<&str>)] = &[
            (None, Some("does not exist")),
            (Some(&["js7-license.jar", "js7-license.pem"]), None),
            (
                Some(&["js7-license.pem"]),
                Some("has no key js7-license.jar"),
            ),
            (
                Some(&["js7-license.jar"]),
                Some("has no license key file besides js7-license.jar"),
            ),
        ];
        for (names, want) in cases {
            let names = names.map(keys);
            assert_eq!(
                license_problem(names.as_deref()).as_deref(),
                *want,
                "{names:?}"
            );
        }
    }
}
