//! What a hostile or clumsy user can do to a running cluster, done as they
//! would (real API server, the chart's admission policies, real sidecars),
//! and what joc-ha answers: a refusal where they look (kubectl's answer, an
//! Event, a condition), and never two pods behind the Service.

use std::time::Duration;

use anyhow::Context;
use joc_ha_crds::names::{
    LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE, ROLE_ACTIVE, ROLE_STANDBY, pod as pod_names,
};
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions, WorkloadMode};
use joc_ha_tests::wait::{http_get, wait_for, wait_for_ok};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const UP: Duration = Duration::from_secs(120);
const POLICY: Duration = Duration::from_secs(30);
/// How fast a real deletion of the active pod hands over (its preStop hook).
const FAILOVER: Duration = Duration::from_secs(45);
/// How fast a holder whose pod left the Service's selector hands over.
const LEFT_SERVICE: Duration = Duration::from_secs(30);

async fn cluster() -> anyhow::Result<(Stack, String, String)> {
    let stack = Stack::start(StackOptions {
        backend: Backend::Postgres,
        members: 2,
        workload: WorkloadMode::Generic,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let active = stack.endpoints.wait_single(None, UP).await?;
    let standby = stack
        .member_other_than(&active)
        .ok_or_else(|| anyhow::anyhow!("no standby"))?;
    Ok((stack, active, standby))
}

fn labels(labels: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"labels": labels}}))
}

/// The API server's refusal of `result`, or why it was not one.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String, String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(status.message),
        other => Err(format!("not refused: {other:?}")),
    }
}

async fn role_of(stack: &Stack, pod: &str) -> anyhow::Result<Option<String>> {
    Ok(stack
        .pods()
        .get(pod)
        .await?
        .labels()
        .get(LABEL_ROLE)
        .cloned())
}

/// Issue 19, case 5: an admin labelling a standby `role=active` by hand put
/// two pods behind the Service until the holder stripped the label. Now the
/// role-label guard refuses every hand-made write of the role label, the
/// lease-term and failsafe annotations, and pods created with the label,
/// and says what to do instead; nothing changes.
#[tokio::test]
async fn a_hand_made_role_label_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (stack, active, standby) = cluster().await?;
    let pods = stack.pods();
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    // Policies take effect a moment after they are created; dry runs pass
    // through admission like real requests.
    wait_for_ok(
        "the role-label guard to be in force",
        POLICY,
        Duration::from_millis(200),
        || async {
            refusal(
                pods.patch(
                    &standby,
                    &dry_run,
                    &labels(json!({LABEL_ROLE: ROLE_ACTIVE})),
                )
                .await,
            )
        },
    )
    .await?;

    let message = refusal(
        pods.patch(
            &standby,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: ROLE_ACTIVE})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    assert!(
        message.contains("written only by the joc-ha sidecars of its cluster")
            && message.contains("kubectl annotate joccluster joc joc-ha.dev/switchover-to="),
        "the refusal says who writes the label and what to do instead: {message}"
    );

    // Taking the active pod out of the Service by hand is refused too.
    refusal(
        pods.patch(
            &active,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: null})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    refusal(
        pods.patch(
            &active,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: ROLE_STANDBY})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    // The lease-term and failsafe marks go with the label.
    for annotation in ["joc-ha.dev/lease-term", "joc-ha.dev/failsafe"] {
        refusal(
            pods.patch(
                &standby,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {annotation: "99"}}})),
            )
            .await,
        )
        .map_err(|e| anyhow::anyhow!("{annotation}: {e}"))?;
    }
    // A pod created with the cluster's labels and `role=active` would be
    // routed to at once.
    let intruder: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "intruder", "labels": {
            LABEL_CLUSTER: "joc", LABEL_COMPONENT: "member", LABEL_ROLE: ROLE_ACTIVE}},
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x:1"}]}
    }))?;
    refusal(pods.create(&PostParams::default(), &intruder).await).map_err(anyhow::Error::msg)?;
    // Other labels stay the user's own.
    pods.patch(
        &standby,
        &PatchParams::default(),
        &labels(json!({"example.com/owner": "ops"})),
    )
    .await?;

    assert_eq!(
        role_of(&stack, &active).await?.as_deref(),
        Some(ROLE_ACTIVE)
    );
    assert_eq!(
        role_of(&stack, &standby).await?.as_deref(),
        Some(ROLE_STANDBY)
    );
    assert_eq!(stack.labeled_active().await?, vec![active.clone()]);
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![active]
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// `GET <path>` on a member's sidecar port, as anyone on the pod network can.
async fn sidecar_get(stack: &Stack, pod: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let base = stack
        .sidecar_url(pod)
        .with_context(|| format!("no sidecar port for {pod}"))?;
    http_get(&format!("{base}{path}"), Duration::from_secs(10)).await
}

/// GET on the sidecar's loopback listener, as a process in the pod does.
async fn sidecar_local_get(stack: &Stack, pod: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let base = stack
        .sidecar_local_url(pod)
        .with_context(|| format!("no loopback sidecar port for {pod}"))?;
    http_get(&format!("{base}{path}"), Duration::from_secs(10)).await
}

/// The number of lease renewals a member's sidecar has timed.
async fn renewals(stack: &Stack, pod: &str) -> anyhow::Result<u64> {
    let (_, body) = sidecar_get(stack, pod, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with("joc_ha_renew_latency_seconds_count{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .context("no renew count in /metrics")
}

/// Issue 19, case 1: `GET /prestop` on each member (the sidecar's port is
/// open to the pod network) made every member step down for good and left
/// the Service empty. Now (a) nothing but `/metrics`, `/healthz` and
/// `/readyz` answers on the sidecar's pod port: `/prestop` and `/role` are
/// 404 there, served on a loopback-only listener; (b) even from inside the
/// pod, /prestop only waits for a hand-over that the pod's own deletion (or
/// SIGTERM) starts, so it changes nothing; (c) a real `kubectl delete pod`
/// of the active still hands over, through the cockpit's `exec` preStop
/// hook (the sidecar's copied executable calling the loopback /prestop).
#[tokio::test]
async fn prestop_called_by_anyone_changes_nothing() -> anyhow::Result<()> {
    let (stack, active, standby) = cluster().await?;
    let before = stack.endpoints.timeline().len();
    // (a) From outside the pod: the pod port (the test process stands for
    // anyone on the pod network).
    for pod in [&active, &standby] {
        for (path, want) in [
            ("/prestop", 404),
            ("/role", 404),
            ("/anything-else", 404),
            ("/metrics", 200),
            ("/healthz", 200),
            ("/readyz", 200),
        ] {
            let (status, _) = sidecar_get(&stack, pod, path).await?;
            assert_eq!(status, want, "GET {path} on {pod}'s pod port");
        }
    }
    // (b) From inside the pod (loopback: the cockpit container's view).
    for pod in [&active, &standby, &active] {
        let (status, _) = sidecar_local_get(&stack, pod, "/prestop").await?;
        assert_eq!(status, 200, "the hook's answer stays 200 ({pod})");
    }
    // The holder keeps renewing, over several renew intervals.
    let renewed = renewals(&stack, &active).await?;
    wait_for(
        "three more renewals by the holder",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            renewals(&stack, &active)
                .await
                .ok()
                .filter(|n| *n >= renewed + 3)
        },
    )
    .await?;
    let (_, role) = sidecar_local_get(&stack, &active, "/role").await?;
    let role: joc_ha_sidecar::role::RoleReport = serde_json::from_str(&role)?;
    assert_eq!(
        role.role, ROLE_ACTIVE,
        "the holder is still active: {role:?}"
    );
    assert_eq!(stack.labeled_active().await?, vec![active.clone()]);
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![active.clone()]
    );
    assert_eq!(
        stack.endpoints.timeline().len(),
        before,
        "the Service's endpoints did not change: {:?}",
        stack.endpoints.timeline()
    );

    // (c) The standby was not made ineligible either: a real deletion of
    // the active hands over to it, and the cockpit's exec hook is what
    // waited for that (its own output says so).
    let dir = stack
        .kubelet
        .pod_dir(&stack.options.namespace, &active)
        .context("no pod dir of the active")?;
    stack.delete_pod(&active).await?;
    let next = stack.endpoints.wait_single(Some(&active), FAILOVER).await?;
    assert_eq!(next, standby);
    let hook_log = dir
        .join("logs")
        .join(format!("{}.prestop.log", pod_names::COCKPIT_CONTAINER));
    let said = wait_for(
        "the preStop hook's answer in its log",
        FAILOVER,
        Duration::from_millis(200),
        || async {
            std::fs::read_to_string(&hook_log)
                .ok()
                .filter(|t| t.contains("joc-ha-sidecar prestop: "))
        },
    )
    .await?;
    assert!(
        said.contains("joc-ha-sidecar prestop: handed over"),
        "{said}"
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Issue 19, case 3: removing `joc-ha.dev/component` from the active pod
/// (which the role-label guard does not guard) took it out of the Service
/// while its sidecar kept the lease: no active endpoint, no end. Now the
/// holder whose pod left the Service's selector gives up the lease with a
/// Warning Event `LeftService`; the standby is the one endpoint within
/// [`LEFT_SERVICE`]; with the label back, the pod is a standby again.
#[tokio::test]
async fn a_removed_component_label_hands_the_lease_over() -> anyhow::Result<()> {
    a_removed_selector_label_hands_the_lease_over(LABEL_COMPONENT, "member").await
}

/// The same with `joc-ha.dev/cluster`: the pod leaves its sidecar's view
/// of the cluster too, and its sidecar may still make it standby (the
/// chart's policies let a cluster's sidecar make its unlabelled
/// `<cluster>-<ordinal>` pod standby, nothing else), so that the label's
/// return puts no second pod behind the Service.
#[tokio::test]
async fn a_removed_cluster_label_hands_the_lease_over() -> anyhow::Result<()> {
    a_removed_selector_label_hands_the_lease_over(LABEL_CLUSTER, "joc").await
}

async fn a_removed_selector_label_hands_the_lease_over(
    label: &str,
    value: &str,
) -> anyhow::Result<()> {
    let (stack, active, standby) = cluster().await?;
    let pods = stack.pods();
    pods.patch(
        &active,
        &PatchParams::default(),
        &labels(json!({label: null})),
    )
    .await?;
    let next = stack
        .endpoints
        .wait_single(Some(&active), LEFT_SERVICE)
        .await?;
    assert_eq!(next, standby);
    let note = stack
        .wait_event("LeftService", &active, Duration::from_secs(10))
        .await?;
    assert!(
        note.contains(label) && note.contains("gives up the lease"),
        "the Event says what and why: {note}"
    );
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(stack.client(), &stack.options.namespace);
    let warning = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("LeftService") && e.type_.as_deref() == Some("Warning")
        });
    assert!(warning, "LeftService is a Warning");

    // Made standby while out, so that the label's return routes nowhere.
    wait_for(
        "the former holder to be labeled standby",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { (role_of(&stack, &active).await.ok()??.as_str() == ROLE_STANDBY).then_some(()) },
    )
    .await?;
    // The label back: a standby again, the Service unchanged.
    pods.patch(
        &active,
        &PatchParams::default(),
        &labels(json!({label: value})),
    )
    .await?;
    wait_for(
        "the former holder to be a standby again",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (role_of(&stack, &active).await.ok()??.as_str() == ROLE_STANDBY).then_some(()) },
    )
    .await?;
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![standby]
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// How long after a switch-over storm the Service may go without exactly
/// one endpoint (the issue saw 11 s of a holder holding without acting).
const AFTER_STORM: Duration = Duration::from_secs(10);

/// Issue 19, case 4: 20 switch-over annotations 80 ms apart left a member
/// holding the lease without acting for 11 s (no endpoint), and an older
/// request's late "Rejected" overwrote `status.lastSwitchover` although
/// that request had moved the lease. Now a holder whose target hands the
/// lease straight back follows it at once, and only a later request
/// replaces the record: after the storm, one endpoint within
/// [`AFTER_STORM`], and the record names where the lease went last.
#[tokio::test]
async fn a_switchover_storm_ends_with_one_endpoint_and_the_last_outcome() -> anyhow::Result<()> {
    let (stack, first, second) = cluster().await?;
    let mut last_target = &first;
    for i in 0..20 {
        let target = if i % 2 == 0 { &second } else { &first };
        stack.annotate_switchover(target).await?;
        last_target = target;
        // The storm's pace is the case itself, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // Settled: the last request taken off the JocCluster, one endpoint,
    // that pod the only one labeled active, and status naming the request
    // handled last: it moved the lease there, or found it already there.
    // (The annotation goes before its outcome is recorded, and a hand-over
    // moves the endpoint after it: all four are waited for together, on
    // the last request's target; an earlier outcome naming the holder that
    // has just taken the last request looks settled for a moment.)
    let (active, record) = wait_for(
        "the storm to settle: one endpoint, its pod alone labeled, recorded",
        AFTER_STORM,
        Duration::from_millis(50),
        || async {
            let cluster = stack.cluster().await.ok()?;
            if cluster
                .annotations()
                .contains_key(joc_ha_crds::names::ANNOTATION_SWITCHOVER_TO)
            {
                return None;
            }
            let routed: Vec<String> = stack.endpoints.current().into_iter().collect();
            let [active] = routed.as_slice() else {
                return None;
            };
            if active != last_target {
                return None;
            }
            if stack.labeled_active().await.ok()? != vec![active.clone()] {
                return None;
            }
            let record = cluster.status?.last_switchover?;
            (record.to == *active).then(|| (active.clone(), record))
        },
    )
    .await?;
    let message = record.message.clone().unwrap_or_default();
    match record.result {
        joc_ha_crds::v1alpha1::SwitchoverResult::Completed => {
            assert!(message.contains(&format!("to {active}")), "{record:?}");
        }
        joc_ha_crds::v1alpha1::SwitchoverResult::Rejected => {
            assert!(message.contains("already the active member"), "{record:?}");
        }
    }
    // And it stays so over a few renewals: the holder acts, nothing older
    // overwrites the record.
    let renewed = renewals(&stack, &active).await?;
    wait_for(
        "three more renewals by the holder",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            renewals(&stack, &active)
                .await
                .ok()
                .filter(|n| *n >= renewed + 3)
        },
    )
    .await?;
    let last = stack
        .cluster()
        .await?
        .status
        .and_then(|s| s.last_switchover);
    // A request taken just before the annotation went may be recorded
    // after the settle: only as a later one, naming the same member.
    let later = last.as_ref().is_some_and(|now| {
        joc_ha_sidecar::decide::supersedes(now, Some(&record)) && now.to == active
    });
    assert!(
        last.as_ref() == Some(&record) || later,
        "only a later request naming {active} may replace the record: {record:?} → {last:?}"
    );
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![active]
    );
    // No stretch without an endpoint as long as the issue's 11 s.
    let timeline = stack.endpoints.timeline();
    for pair in timeline.windows(2) {
        if pair[0].1.is_empty() {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap < Duration::from_secs(5),
                "no endpoint for {gap:?}: {timeline:?}"
            );
        }
    }
    stack.endpoints.assert_never_two();
    Ok(())
}

/// A create of `event` with `client`, refused by admission: its message.
async fn event_refused(
    client: &kube::Client,
    namespace: &str,
    event: serde_json::Value,
) -> anyhow::Result<String> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(client.clone(), namespace);
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(event)?;
    refusal(api.create(&PostParams::default(), &event).await).map_err(anyhow::Error::msg)
}

fn event_about(kind: &str, name: &str, controller: &str) -> serde_json::Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "forged-"},
        "regarding": {"apiVersion": if kind == "Pod" { "v1" } else { "joc-ha.dev/v1alpha1" },
            "kind": kind, "name": name, "namespace": "js7"},
        "reason": "SwitchoverCompleted", "note": "forged", "type": "Normal",
        "action": "SwitchoverCompleted",
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": controller, "reportingInstance": "x",
    })
}

/// Issue 19, case 9 (the sidecar's parts): a sidecar's token could write
/// `status.lastSwitchover` and operator-looking Events about other
/// JocClusters. Now the chart's sidecar policies refuse both: status only
/// of its own JocCluster, Events only about its own JocCluster or member
/// pods and never as the operator. Its own cluster's sidecars still record
/// and publish (see the storm and label tests).
#[tokio::test]
async fn another_clusters_sidecar_token_cannot_write_status_or_events() -> anyhow::Result<()> {
    let (stack, active, _) = cluster().await?;
    let namespace = stack.options.namespace.clone();
    stack.add_cluster("other").await?;
    let token = wait_for_ok(
        "the other cluster's sidecar ServiceAccount",
        UP,
        Duration::from_millis(200),
        || async {
            stack
                .plane
                .token_for(&namespace, "other-joc-ha-sidecar")
                .await
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    let other = stack.plane.client_for_token(&token).await?;
    let clusters: kube::Api<joc_ha_crds::JocCluster> =
        kube::Api::namespaced(other.clone(), &namespace);
    let forged = Patch::Merge(json!({"status": {"lastSwitchover": {
        "to": "joc-1", "result": "Rejected", "message": "forged"}}}));
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let message = wait_for_ok(
        "the JocCluster status policy to be in force",
        POLICY,
        Duration::from_millis(200),
        || async { refusal(clusters.patch_status("joc", &dry_run, &forged).await) },
    )
    .await?;
    // The sidecar's Role names its own JocCluster, and the policy holds it
    // to its own cluster too (should the Role be widened): either refuses.
    assert!(
        message.contains("may change only its own JocCluster")
            || message.contains(r#"cannot patch resource "jocclusters/status""#),
        "refused, saying why: {message}"
    );
    refusal(
        clusters
            .patch_status("joc", &PatchParams::default(), &forged)
            .await,
    )
    .map_err(anyhow::Error::msg)?;
    // Its own cluster's status stays writable.
    clusters.patch_status("other", &dry_run, &forged).await?;

    // Events: not about another cluster or its pods, not as the operator.
    let message = wait_for_ok(
        "the Event policy to be in force",
        POLICY,
        Duration::from_millis(200),
        || async {
            event_refused(
                &other,
                &namespace,
                event_about("JocCluster", "joc", "joc-ha-sidecar"),
            )
            .await
            .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    assert!(
        message.contains("only about its own JocCluster other"),
        "{message}"
    );
    let message = event_refused(
        &other,
        &namespace,
        event_about("Pod", &active, "joc-ha-sidecar"),
    )
    .await?;
    assert!(
        message.contains("only about its own JocCluster"),
        "{message}"
    );
    let message = event_refused(
        &other,
        &namespace,
        event_about("JocCluster", "other", "joc-ha-operator"),
    )
    .await?;
    assert!(message.contains("as the operator"), "{message}");
    // The old core/v1 API is held to the same rule.
    let core: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(other.clone(), &namespace);
    let old: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"generateName": "forged-"},
        "involvedObject": {"apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster",
            "name": "joc", "namespace": namespace},
        "reason": "SwitchoverCompleted", "message": "forged", "type": "Normal",
        "source": {"component": "joc-ha-operator"},
    }))?;
    refusal(core.create(&PostParams::default(), &old).await).map_err(anyhow::Error::msg)?;
    // An Event of its own, under its own name, passes.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(other.clone(), &namespace);
    let own: k8s_openapi::api::events::v1::Event =
        serde_json::from_value(event_about("JocCluster", "other", "joc-ha-sidecar"))?;
    events
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &own,
        )
        .await?;

    let status = stack
        .cluster()
        .await?
        .status
        .and_then(|s| s.last_switchover);
    assert!(
        status.as_ref().and_then(|s| s.message.as_deref()) != Some("forged"),
        "{status:?}"
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Issue 19, case 9: a standby kept a stale `joc-ha.dev/lease-term`
/// annotation (its sidecar died; the new holder relabelled it but left the
/// annotation). Now the one label writer removes it when it makes another
/// pod standby.
#[tokio::test]
async fn a_demoted_pod_keeps_no_lease_term() -> anyhow::Result<()> {
    use joc_ha_crds::names::ANNOTATION_LEASE_TERM;
    let (stack, first, second) = cluster().await?;
    let annotation = |pod: &Pod| pod.annotations().get(ANNOTATION_LEASE_TERM).cloned();
    assert!(annotation(&stack.pods().get(&first).await?).is_some());
    // Its sidecar dies and stays dead: only the new holder can relabel it.
    stack
        .kubelet
        .block_starts(&stack.options.namespace, &first, "joc-ha-sidecar");
    stack
        .sidecar(&first)
        .context("the active member's sidecar")?
        .kill()
        .await?;
    let next = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    assert_eq!(next, second);
    wait_for(
        "the former holder to be standby without a lease term",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let pod = stack.pods().get(&first).await.ok()?;
            (pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_STANDBY)
                && annotation(&pod).is_none())
            .then_some(())
        },
    )
    .await?;
    assert!(annotation(&stack.pods().get(&second).await?).is_some());
    stack.endpoints.assert_never_two();
    Ok(())
}

/// How fast a fixed database Secret gives one active endpoint again: the
/// operator looks at the Secret every 15 s while the cluster has no active
/// member, then replaces the members one after another (each restarts its
/// sidecar and takes the lease within the lease TTL).
const SECRET_FIXED: Duration = Duration::from_secs(90);

/// Every log file of the pods (all containers, all restarts) and of the
/// operator, as (path, text).
fn all_logs(stack: &Stack, pods: &[String]) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs: Vec<std::path::PathBuf> = pods
        .iter()
        .filter_map(|p| stack.kubelet.pod_dir(&stack.options.namespace, p))
        .map(|d| d.join("logs"))
        .collect();
    dirs.push(stack.plane.log_dir());
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                files.push((entry.path(), text));
            }
        }
    }
    files
}

/// Issue 19, case 7: fixing a wrong database password in the Secret changed
/// nothing until the pods were deleted, and status said "no problem found".
/// Now the status says the sidecars cannot log in (Degraded
/// `DatabaseLoginFailed`, with a Warning Event), and once the Secret is
/// fixed the operator rolls the pods (the pod template carries the Secret's
/// version) and one member is active again within [`SECRET_FIXED`]. No
/// password appears in any log.
#[tokio::test]
async fn a_fixed_database_secret_takes_effect() -> anyhow::Result<()> {
    const WRONG: &str = "wrong-password-19";
    let db = joc_ha_tests::db::TestDb::start_private(Backend::Postgres).await?;
    let stack = Stack::start(StackOptions {
        backend: Backend::Postgres,
        members: 2,
        workload: WorkloadMode::Generic,
        database_url: Some(db.url_with_password(WRONG)),
        ..StackOptions::default()
    })
    .await?;
    let clusters = stack.clusters();
    let degraded = wait_for_ok(
        "Degraded=True reason DatabaseLoginFailed",
        UP,
        Duration::from_millis(250),
        || async {
            let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            match conditions.into_iter().find(|c| c.type_ == "Degraded") {
                Some(c) if c.status == "True" && c.reason == "DatabaseLoginFailed" => Ok(c),
                other => Err(format!("Degraded {other:?}")),
            }
        },
    )
    .await?;
    assert!(
        degraded.message.contains("cannot log in to the database")
            && degraded.message.contains("refused the login"),
        "{}",
        degraded.message
    );
    eprintln!("Degraded: {}", degraded.message);
    stack
        .wait_event("DatabaseLoginFailed", "refused the login", UP)
        .await?;
    assert!(stack.endpoints.current().is_empty());
    let first_pods = stack.member_names();
    let uid_of = |pod: Pod| pod.uid().unwrap_or_default();
    let mut first_uids = Vec::new();
    for pod in &first_pods {
        first_uids.push(uid_of(stack.pods().get(pod).await?));
    }

    // The fix, as a user would make it.
    let fixed = std::time::Instant::now();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(stack.client(), &stack.options.namespace);
    secrets
        .patch(
            "joc-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"url": db.url()}})),
        )
        .await?;
    let active = stack.endpoints.wait_single(None, SECRET_FIXED).await?;
    eprintln!(
        "one active endpoint ({active}) {:.1?} after the Secret was fixed",
        fixed.elapsed()
    );
    // The pods were replaced (JOC reads the password only at start), not
    // retried with the old environment.
    let active_uid = uid_of(stack.pods().get(&active).await?);
    assert!(
        !first_uids.contains(&active_uid),
        "the active pod must be a new one"
    );
    wait_for_ok("Degraded=False", UP, Duration::from_millis(250), || async {
        let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
        let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.into_iter().find(|c| c.type_ == "Degraded") {
            Some(c) if c.status == "False" => Ok(()),
            other => Err(format!("Degraded {other:?}")),
        }
    })
    .await?;
    stack.endpoints.assert_never_two();

    // No password in any log: neither the wrong one nor the right one.
    let logs = all_logs(&stack, &first_pods);
    assert!(!logs.is_empty(), "no logs found");
    for (path, text) in &logs {
        for secret in [WRONG, joc_ha_tests::db::TEST_PASSWORD] {
            assert!(
                !text.contains(secret),
                "{} contains a password",
                path.display()
            );
        }
    }
    eprintln!("{} log files checked for passwords", logs.len());
    Ok(())
}

/// Issue 19, case 7 follow-up: a Secret changed on a healthy cluster (a
/// rotation) used to wait for the operator's periodic reconcile (every 5 min
/// while a member is active). The operator watches Secrets, so it stamps the
/// new version on the pod template within [`SECRET_SEEN`], then rolls the
/// pods with one active endpoint at every moment but the switch-over.
#[tokio::test]
async fn a_secret_changed_on_a_healthy_cluster_is_seen_at_once() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        backend: Backend::Postgres,
        members: 2,
        workload: WorkloadMode::Generic,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    stack.endpoints.wait_single(None, UP).await?;
    let statefulsets: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(stack.client(), &stack.options.namespace);
    let versions = || async {
        let sts = statefulsets.get("joc").await.ok()?;
        sts.spec
            .template
            .metadata?
            .annotations?
            .get(joc_ha_crds::names::ANNOTATION_SECRET_VERSIONS)
            .cloned()
    };
    let before = wait_for(
        "the members' Secret versions",
        UP,
        Duration::from_millis(200),
        versions,
    )
    .await?;

    // Precondition: the operator has settled (no reconcile for QUIET), so
    // only a watch of the Secret can bring it back before its 5 min requeue.
    let reconciles = || stack.operator.log().matches("reconciled").count();
    let mut last = (reconciles(), std::time::Instant::now());
    wait_for(
        "the operator to be quiet (no reconcile) for 3 s",
        UP,
        Duration::from_millis(200),
        || {
            let now = reconciles();
            if now != last.0 {
                last = (now, std::time::Instant::now());
            }
            let quiet = last.1.elapsed() >= QUIET;
            async move { quiet.then_some(()) }
        },
    )
    .await?;
    // A rotation as a user would make it: the Secret changes, the
    // credentials stay valid.
    let changed = std::time::Instant::now();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(stack.client(), &stack.options.namespace);
    secrets
        .patch(
            "joc-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"rotated": "1"}},
                "stringData": {"rotated": "1"}})),
        )
        .await?;
    let after = wait_for(
        "the members' pod template to carry the new Secret version",
        SECRET_SEEN,
        Duration::from_millis(100),
        || async { versions().await.filter(|v| *v != before) },
    )
    .await?;
    let seen = changed.elapsed();
    eprintln!("Secret versions {before} -> {after} on the StatefulSet {seen:.1?} after the change");
    assert!(seen < SECRET_SEEN);
    // The roll then ends with one active member on new pods.
    wait_for_ok(
        "every member pod to run the new template and one to be active",
        SECRET_FIXED,
        Duration::from_millis(250),
        || async {
            for pod in stack.member_names() {
                let pod = stack.pods().get(&pod).await.map_err(|e| e.to_string())?;
                let version = pod
                    .annotations()
                    .get(joc_ha_crds::names::ANNOTATION_SECRET_VERSIONS)
                    .cloned();
                if version.as_deref() != Some(after.as_str()) {
                    return Err(format!("{} has {version:?}", pod.name_any()));
                }
            }
            match stack.endpoints.current().len() {
                1 => Ok(()),
                n => Err(format!("{n} active endpoints")),
            }
        },
    )
    .await?;
    eprintln!(
        "rolled with one active endpoint {:.1?} after the change",
        changed.elapsed()
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// How soon the operator must see a changed Secret (its periodic reconcile
/// on a healthy cluster comes every 5 min).
const SECRET_SEEN: Duration = Duration::from_secs(10);
/// How long the operator must have been idle before the Secret changes.
const QUIET: Duration = Duration::from_secs(3);

/// Issue 19, case 8: a JocCluster of the same name in another namespace on
/// the same database ran a second active JOC, every status green, and
/// deleting it forced a fail-over in the first. Now (js7 mode) the first
/// cluster owns the database: the second's sidecars refuse to join, its
/// `joc-config` init containers refuse to start JOC, its status says
/// Degraded `DatabaseInUse` naming the first, with a Warning Event; the
/// first keeps its one active member and lease term.
#[tokio::test]
async fn a_second_cluster_on_the_same_database_is_refused() -> anyhow::Result<()> {
    second_cluster_on_the_same_database(Backend::Postgres, false).await
}

/// The rest of case 8: the refused cluster's JOC never starts (its pods stay
/// in Init), so deleting that cluster writes none of JOC's clean-shutdown
/// rows (docs/joc-facts.md fact 12) under member ids that collide with the
/// first cluster's: the first keeps its active member, lease term and JOC's
/// `MEMBER_ID`.
#[tokio::test]
async fn deleting_a_refused_second_cluster_changes_nothing_in_the_first() -> anyhow::Result<()> {
    second_cluster_on_the_same_database(Backend::Postgres, true).await
}

#[tokio::test]
async fn deleting_a_refused_second_cluster_changes_nothing_in_the_first_mariadb()
-> anyhow::Result<()> {
    second_cluster_on_the_same_database(Backend::MariaDb, true).await
}

async fn second_cluster_on_the_same_database(
    backend: Backend,
    delete_copy: bool,
) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        backend,
        members: 2,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let active = stack.endpoints.wait_single(None, UP).await?;
    // The term as the operator reports it, once it reports the active member.
    let term = wait_for(
        "status to show the active member's term",
        UP,
        Duration::from_millis(200),
        || async {
            let status = stack.cluster().await.ok()?.status?;
            (status.active_member.as_deref() == Some(active.as_str()))
                .then_some(status.lease_term)
                .flatten()
        },
    )
    .await?;
    let term = Some(term);

    // The same cluster, as a user would copy it into another namespace.
    let other = "other";
    stack.plane.create_namespace(other).await?;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(stack.client(), other);
    for (name, data) in [
        ("joc-db", json!({"url": stack.database_url})),
        (
            "joc-license",
            json!({"js7-license.jar": "stand-in jar", "js7-license.pem": "stand-in key"}),
        ),
    ] {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    let mut copy = stack.cluster().await?;
    copy.metadata = kube::api::ObjectMeta {
        name: Some("joc".into()),
        namespace: Some(other.into()),
        ..Default::default()
    };
    copy.status = None;
    let copies: kube::Api<joc_ha_crds::JocCluster> = kube::Api::namespaced(stack.client(), other);
    copies.create(&PostParams::default(), &copy).await?;

    let degraded = wait_for_ok(
        "other/joc: Degraded=True reason DatabaseInUse",
        UP,
        Duration::from_millis(250),
        || async {
            let cluster = copies.get("joc").await.map_err(|e| e.to_string())?;
            let conditions = cluster.status.map(|s| s.conditions).unwrap_or_default();
            match conditions.into_iter().find(|c| c.type_ == "Degraded") {
                Some(c) if c.status == "True" && c.reason == "DatabaseInUse" => Ok(c),
                other => Err(format!("Degraded {other:?}")),
            }
        },
    )
    .await?;
    assert!(
        degraded.message.contains("belongs to JocCluster js7/joc"),
        "{}",
        degraded.message
    );
    eprintln!("other/joc: {}", degraded.message);
    let copy_status = copies.get("joc").await?.status.unwrap_or_default();
    assert_eq!(
        copy_status.active_member, None,
        "the refused cluster has no active member"
    );

    // The first cluster: the same one active member, the same term.
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![active.clone()]
    );
    assert_eq!(
        stack.cluster().await?.status.and_then(|s| s.lease_term),
        term
    );
    // JOC's own active member: the first cluster's, named by its pod.
    let joc_member = joc_ha_tests::joc::joc_active_member(&stack.database_url).await?;
    assert_eq!(
        joc_member.as_deref().map(joc_ha_tests::agreement::host_of),
        Some(active.as_str()),
        "JOC_CLUSTER.MEMBER_ID names the first cluster's active pod"
    );

    // The refused cluster's JOC never started: every member pod is held in
    // Init by `joc-config`, which exited with the refusal (code 3).
    let copy_pods: kube::Api<Pod> = kube::Api::namespaced(stack.client(), other);
    for ordinal in 0..2 {
        let name = format!("joc-{ordinal}");
        let refused = wait_for_ok(
            &format!("{other}/{name}: joc-config refused, JOC not started"),
            UP,
            Duration::from_millis(250),
            || async {
                let pod = copy_pods.get(&name).await.map_err(|e| e.to_string())?;
                let status = pod.status.unwrap_or_default();
                let config = status
                    .init_container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.name == "joc-config")
                    .ok_or("no joc-config status")?;
                let exit = config
                    .last_state
                    .and_then(|s| s.terminated)
                    .or(config.state.and_then(|s| s.terminated))
                    .map(|t| t.exit_code);
                let joc_ran = status
                    .container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.name == "joc")
                    .any(|c| {
                        c.state
                            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                            || c.last_state.is_some_and(|s| s.terminated.is_some())
                    });
                match (exit, joc_ran) {
                    (_, true) => Err("container joc has run".to_owned()),
                    (Some(3), false) => Ok(()),
                    (other, _) => Err(format!("joc-config exit code {other:?}")),
                }
            },
        )
        .await;
        refused.map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    if !delete_copy {
        stack.endpoints.assert_never_two();
        return Ok(());
    }
    // Deleting the copy changes nothing in the first cluster.
    copies
        .delete("joc", &kube::api::DeleteParams::foreground())
        .await?;
    wait_for(
        "other/joc to be gone",
        UP,
        Duration::from_millis(250),
        || async { matches!(copies.get_opt("joc").await, Ok(None)).then_some(()) },
    )
    .await?;
    // What the clean shutdown used to cause (a fail-over in the first
    // cluster) showed within a few seconds: watch the first cluster for
    // STABLE_FOR and require that nothing moves at any look.
    let watched = std::time::Instant::now();
    while watched.elapsed() < STABLE_FOR {
        assert_eq!(
            stack.endpoints.current().into_iter().collect::<Vec<_>>(),
            vec![active.clone()],
            "the first cluster's endpoint moved {:?} after the deletion",
            watched.elapsed()
        );
        assert_eq!(
            joc_ha_tests::joc::joc_active_member(&stack.database_url).await?,
            joc_member,
            "JOC_CLUSTER.MEMBER_ID moved {:?} after the deletion",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        stack.cluster().await?.status.and_then(|s| s.lease_term),
        term
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// How long the first cluster is watched after a refused cluster's
/// deletion: above the stand-ins' JOC heart-beat-exceeded interval, after
/// which a dead member's JOC would have been replaced.
const STABLE_FOR: Duration = Duration::from_secs(10);
