//! The sidecar on the harness: the real operator, real sidecars and stand-in
//! cockpits as processes (with their pods' own service-account tokens, under
//! the chart's admission policy), real PostgreSQL and MariaDB. A watch on the
//! active Service's EndpointSlices runs for the whole of every test and must
//! never see two pods behind it.

use std::time::Duration;

use anyhow::Context as _;

use joc_ha_crds::names::{
    ANNOTATION_SWITCHOVER_TO, LABEL_COMPONENT, LABEL_ROLE, ROLE_STANDBY, reason,
};
use joc_ha_crds::v1alpha1::SwitchoverResult;
use joc_ha_sidecar::role::read_role_file;
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions, WorkloadMode};
use joc_ha_tests::wait::wait_for;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};

const UP: Duration = Duration::from_secs(120);
/// Generous: the lease TTL is 5 s; a loaded 2-core machine is slow.
const FAILOVER: Duration = Duration::from_secs(45);
const SIDECAR: &str = "joc-ha-sidecar";

async fn cluster(backend: Backend, api_servers: i32) -> anyhow::Result<(Stack, String)> {
    // The lease and sidecar behaviour on its own: the generic workload (the
    // stand-in cockpit follows the role report). js7_e2e covers JOC.
    let stack = Stack::start(StackOptions {
        backend,
        api_servers,
        workload: WorkloadMode::Generic,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let active = stack.endpoints.wait_single(None, UP).await?;
    Ok((stack, active))
}

/// The value of the first series in a `/metrics` text that starts with `prefix`.
fn metric_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

async fn role_label(stack: &Stack, pod: &str) -> anyhow::Result<Option<String>> {
    Ok(stack
        .pods()
        .get(pod)
        .await?
        .labels()
        .get(LABEL_ROLE)
        .cloned())
}

/// SIGKILL of the active member's sidecar: one new active endpoint.
async fn sigkill_of_the_active(backend: Backend) -> anyhow::Result<()> {
    let (stack, first) = cluster(backend, 0).await?;
    assert_eq!(stack.labeled_active().await?, vec![first.clone()]);
    // Keep it dead, as a crashed pod would be, to see the others take over.
    stack
        .kubelet
        .block_starts(&stack.options.namespace, &first, SIDECAR);
    stack
        .sidecar(&first)
        .expect("sidecar process")
        .kill()
        .await?;
    let second = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    assert_ne!(first, second);
    assert_eq!(stack.labeled_active().await?, vec![second]);
    stack.endpoints.assert_never_two();
    Ok(())
}

/// The active pod crashes (its sidecar and its cockpit killed at once): the
/// kubelet reports both containers run anew, and a standby takes over as soon
/// as the holder's session lock is free. On MariaDB, whose holder cannot see
/// its own session end, that is Kubernetes' word, not the `hold + margin`
/// after the last renew (README "Fail-over"); on PostgreSQL the session's end
/// alone is enough and may come first.
async fn a_crashed_pod_is_taken_over_on_kubernetes_word(backend: Backend) -> anyhow::Result<()> {
    let (stack, first) = cluster(backend, 0).await?;
    let sidecar = stack.sidecar(&first).expect("sidecar process");
    let cockpit = stack.cockpit(&first).expect("cockpit process");
    let (a, b) = tokio::join!(sidecar.kill(), cockpit.kill());
    a?;
    b?;
    let second = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    assert_ne!(first, second);
    let log = stack
        .kubelet
        .container_log(&stack.options.namespace, &second, SIDECAR)
        .context("the new holder's sidecar log")?;
    let take_over = wait_for(
        "the new holder to log its take-over",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .rev()
                .map(without_colours)
                .find(|l| l.contains("took over from a holder whose database session ended"))
        },
    )
    .await?;
    if backend == Backend::MariaDb {
        assert!(
            take_over.contains("confirmed_gone=true"),
            "the take-over waited for hold + margin: {take_over}"
        );
    }
    stack.endpoints.assert_never_two();
    Ok(())
}

/// A log line without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// SIGSTOP of the active sidecar beyond the TTL: another member takes over
/// and strips the frozen pod's label; once resumed, the frozen one is standby.
async fn sigstop_beyond_the_ttl(backend: Backend) -> anyhow::Result<()> {
    let (stack, first) = cluster(backend, 0).await?;
    let sidecar = stack.sidecar(&first).expect("sidecar process");
    sidecar.freeze()?;
    let second = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    sidecar.thaw()?;
    let dir = stack
        .kubelet
        .pod_dir(&stack.options.namespace, &first)
        .expect("pod dir");
    wait_for(
        "the resumed member to be standby",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let label = role_label(&stack, &first).await.ok()??;
            let report = role_files(&dir).into_iter().next()?;
            (label == ROLE_STANDBY && !report.is_active_now()).then_some(())
        },
    )
    .await?;
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![second]
    );
    stack.endpoints.assert_never_two();
    Ok(())
}

/// The role files under a pod's folder (the emptyDir shared with the cockpit).
fn role_files(dir: &std::path::Path) -> Vec<joc_ha_sidecar::role::RoleReport> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "role.json")
                && let Some(parent) = path.parent()
                && let Ok(report) = read_role_file(parent)
            {
                found.push(report);
            }
        }
    }
    found
}

/// Deleting the active pod: its preStop hook hands over first.
async fn deletion_of_the_active_pod(backend: Backend) -> anyhow::Result<()> {
    let (stack, first) = cluster(backend, 0).await?;
    stack.delete_pod(&first).await?;
    let second = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    assert_ne!(first, second);
    // The StatefulSet brings the pod back, as a standby.
    wait_for(
        "the recreated pod to be a Ready standby",
        UP,
        Duration::from_millis(200),
        || async {
            let pod = stack.pods().get(&first).await.ok()?;
            (joc_ha_tests::stack::is_ready(&pod)
                && pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_STANDBY))
            .then_some(())
        },
    )
    .await?;
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Switch-over to a named pod, then to `any`.
async fn switchover_named_and_any(backend: Backend) -> anyhow::Result<()> {
    let (stack, first) = cluster(backend, 0).await?;
    let target = stack.member_other_than(&first).expect("a standby");
    stack.annotate_switchover(&target).await?;
    let now = stack.endpoints.wait_single(Some(&first), FAILOVER).await?;
    assert_eq!(now, target);
    stack
        .wait_event(reason::SWITCHOVER_COMPLETED, &target, FAILOVER)
        .await?;
    let status = wait_for(
        "lastSwitchover completed",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let cluster = stack.cluster().await.ok()?;
            let last = cluster.status?.last_switchover?;
            (last.to == target).then_some(last)
        },
    )
    .await?;
    assert_eq!(status.result, SwitchoverResult::Completed);
    assert_eq!(status.from.as_deref(), Some(first.as_str()));
    let cluster = stack.cluster().await?;
    assert!(
        !cluster.annotations().contains_key(ANNOTATION_SWITCHOVER_TO),
        "the request annotation is removed"
    );

    stack.annotate_switchover("any").await?;
    let third = stack.endpoints.wait_single(Some(&target), FAILOVER).await?;
    assert_ne!(third, target);
    stack.endpoints.assert_never_two();
    Ok(())
}

/// A switch-over asked for once the members are Ready again after a
/// database restart (pooled connections the restart dropped, electors
/// reconnecting, the lease possibly changing hands) is carried out, never
/// rejected for a lost connection (seen in CI's short js7 campaign on
/// MariaDB: "cannot read member heartbeats: not connected") nor for a lease
/// the restart ended while the holder handled it (then the request goes
/// back to the next holder). If the lease moved to the target by itself
/// meanwhile, the target is active all the same and the status says so.
async fn switchover_right_after_a_database_restart(backend: Backend) -> anyhow::Result<()> {
    let (mut stack, _) = cluster(backend, 0).await?;
    let before = session_keys(&stack).await?;
    let db = stack.db_server()?;
    db.stop().await?;
    db.start().await?;
    // Ready again after each sidecar opened a new lease session (a new
    // session key in its member row): a pod still Ready from before would
    // drop out of Ready a moment later, and a switch-over to it is rightly
    // rejected.
    wait_for(
        "every sidecar in a new lease session",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let now = session_keys(&stack).await.ok()?;
            let renewed = before.iter().all(|(member, key)| {
                now.iter()
                    .any(|(m, k)| m == member && k.is_some() && k != key)
            });
            (now.len() == before.len() && renewed).then_some(())
        },
    )
    .await?;
    stack.wait_members_ready(FAILOVER).await?;
    let first = stack.endpoints.wait_single(None, FAILOVER).await?;
    let target = stack.member_other_than(&first).expect("a standby");
    // A member whose readiness still flickers after the restart is rightly
    // refused as a target ("not Ready"); the user asks again, as the
    // rejection's message invites. Any other rejection fails the test.
    for attempt in 1.. {
        let asked = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        stack.annotate_switchover(&target).await?;
        let last = wait_for(
            "lastSwitchover for this request",
            FAILOVER,
            Duration::from_millis(100),
            || async {
                let last = stack.cluster().await.ok()?.status?.last_switchover?;
                (last.to == target && last.requested.as_ref().is_some_and(|t| t.0 >= asked))
                    .then_some(last)
            },
        )
        .await?;
        let message = last.message.clone().unwrap_or_default();
        if last.result == SwitchoverResult::Completed
            || message.contains("is already the active member")
        {
            break;
        }
        assert!(
            message.contains("is not Ready") && attempt < 5,
            "attempt {attempt}: {last:?}"
        );
        stack.wait_members_ready(FAILOVER).await?;
    }
    wait_for(
        "the target alone behind the Service",
        FAILOVER,
        Duration::from_millis(20),
        || async {
            let current = stack.endpoints.current();
            (current.len() == 1 && current.contains(&target)).then_some(())
        },
    )
    .await?;
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Each member's lease session key (`joc_ha_member.session_key`; a new
/// random one per session, NULL while not ready), by member name.
async fn session_keys(stack: &Stack) -> anyhow::Result<Vec<(String, Option<i64>)>> {
    use sqlx::Row as _;
    let mut conn = joc_ha_tests::joc::connect(&stack.database_url).await?;
    let cluster_id = format!("{}/{}", stack.options.namespace, stack.options.name);
    let placeholder = if stack.database_url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT member, session_key FROM joc_ha_member WHERE cluster_id = {placeholder} AND kind = 'member' ORDER BY member"
    )))
    .bind(cluster_id)
    .fetch_all(&mut conn)
    .await
    .context("reading joc_ha_member")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Every rejection says why in an Event and status, and changes nothing.
async fn switchover_rejections(backend: Backend) -> anyhow::Result<()> {
    let (stack, active) = cluster(backend, 1).await?;
    let api_server = wait_for(
        "the API-server pod",
        UP,
        Duration::from_millis(200),
        || async {
            let list = stack
                .pods()
                .list(&ListParams::default().labels(&format!("{LABEL_COMPONENT}=api-server")))
                .await
                .ok()?;
            list.items.first().map(|p| p.name_any())
        },
    )
    .await?;
    // A standby made not Ready: its sidecar frozen (readiness probe fails).
    let not_ready = stack.member_other_than(&active).expect("a standby");
    stack.sidecar(&not_ready).expect("sidecar").freeze()?;
    wait_for(
        "the frozen standby to be not Ready",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let pod = stack.pods().get(&not_ready).await.ok()?;
            (!joc_ha_tests::stack::is_ready(&pod)).then_some(())
        },
    )
    .await?;

    let cases = [
        ("joc-9".to_owned(), "not a member of this cluster"),
        (api_server.clone(), "API server"),
        (not_ready.clone(), "not Ready"),
        (active.clone(), "already the active member"),
        ("Not_A_Pod!".to_owned(), "neither a pod name"),
    ];
    for (value, why) in cases {
        stack.annotate_switchover(&value).await?;
        let note = stack
            .wait_event(reason::SWITCHOVER_REJECTED, why, FAILOVER)
            .await?;
        assert!(
            note.contains(&value),
            "{note:?} names the request {value:?}"
        );
        let last = wait_for(
            "lastSwitchover rejected",
            FAILOVER,
            Duration::from_millis(100),
            || async {
                let status = stack.cluster().await.ok()?.status?;
                let last = status.last_switchover?;
                (last.to == value).then_some(last)
            },
        )
        .await?;
        assert_eq!(last.result, SwitchoverResult::Rejected);
        assert!(last.message.as_deref().unwrap_or_default().contains(why));
        wait_for(
            "the annotation to be removed",
            FAILOVER,
            Duration::from_millis(100),
            || async {
                let cluster = stack.cluster().await.ok()?;
                (!cluster.annotations().contains_key(ANNOTATION_SWITCHOVER_TO)).then_some(())
            },
        )
        .await?;
        // Nothing else changed: the same member is active.
        assert_eq!(
            stack.labeled_active().await?,
            vec![active.clone()],
            "after {value:?}"
        );
        assert_eq!(
            stack.endpoints.current().into_iter().collect::<Vec<_>>(),
            vec![active.clone()]
        );
    }
    assert!(
        stack
            .cluster_events(reason::SWITCHOVER_COMPLETED)
            .await?
            .is_empty(),
        "no switch-over happened"
    );
    stack.sidecar(&not_ready).expect("sidecar").thaw()?;
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Wrong role labels are corrected by the sidecars. Users cannot write the
/// label (the chart's role-label guard refuses them: `hostile_users`), so the
/// wrong labels here are written with the cluster's own sidecar account, as
/// a sidecar acting on a stale view would.
async fn hand_made_labels_are_corrected(backend: Backend) -> anyhow::Result<()> {
    let (stack, active) = cluster(backend, 0).await?;
    let standby = stack.member_other_than(&active).expect("a standby");
    let token = stack
        .plane
        .token_for(
            &stack.options.namespace,
            &joc_ha_crds::names::sidecar_service_account_name(&stack.options.name),
        )
        .await?;
    let sidecar_pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(
        stack.plane.client_for_token(&token).await?,
        &stack.options.namespace,
    );
    let set_label = |pod: String, role: &'static str| {
        let pods = sidecar_pods.clone();
        async move {
            let patch = serde_json::json!({"metadata": {"labels": {LABEL_ROLE: role}}});
            pods.patch(&pod, &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    };
    // The active pod relabeled standby: it labels itself active again.
    set_label(active.clone(), "standby").await?;
    wait_for(
        "the active label restored",
        FAILOVER,
        Duration::from_millis(50),
        || async {
            (role_label(&stack, &active).await.ok()?.as_deref() == Some("active")).then_some(())
        },
    )
    .await?;
    stack.endpoints.assert_never_two();

    // A standby labeled active by hand: the holder strips it. (Only this
    // hand-made pair may ever have been behind the Service together.)
    set_label(standby.clone(), "active").await?;
    wait_for(
        "the hand-made active label removed",
        FAILOVER,
        Duration::from_millis(50),
        || async {
            (role_label(&stack, &standby).await.ok()?.as_deref() == Some(ROLE_STANDBY))
                .then_some(())
        },
    )
    .await?;
    stack.endpoints.wait_single(None, FAILOVER).await?;
    let expected: std::collections::BTreeSet<String> = [active.clone(), standby.clone()].into();
    for violation in stack.endpoints.violations() {
        assert_eq!(
            violation, expected,
            "only the hand-made label may double the Service"
        );
    }
    assert_eq!(stack.labeled_active().await?, vec![active]);
    Ok(())
}

/// The database down for everyone: nobody can take the lease, so the holder
/// stays active (failsafe) while the API shows no other active pod; when the
/// database returns, one member is active again.
async fn database_down_for_everyone(backend: Backend) -> anyhow::Result<()> {
    let (mut stack, active) = cluster(backend, 0).await?;
    let ttl = Duration::from_secs(5);
    stack.db_server()?.stop().await?;
    wait_for(
        "the holder to enter failsafe mode",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let pod = stack.pods().get(&active).await.ok()?;
            pod.annotations()
                .contains_key("joc-ha.dev/failsafe")
                .then_some(())
        },
    )
    .await?;
    // Past the TTL the holder is still the one active member, and tells its
    // cockpit so.
    tokio::time::sleep(ttl).await;
    assert_eq!(stack.labeled_active().await?, vec![active.clone()]);
    let dir = stack
        .kubelet
        .pod_dir(&stack.options.namespace, &active)
        .expect("pod dir");
    assert!(
        role_files(&dir).iter().any(|r| r.is_active_now()),
        "failsafe keeps the cockpit active"
    );
    // Its metrics say so: failsafe, and no renew for longer than the TTL.
    let url = format!(
        "{}/metrics",
        stack.sidecar_url(&active).expect("sidecar port")
    );
    let (_, metrics) = joc_ha_tests::wait::http_get(&url, Duration::from_secs(5)).await?;
    assert_eq!(
        metric_value(&metrics, "joc_ha_failsafe{"),
        Some(1.0),
        "{metrics}"
    );
    let renew_age = metric_value(&metrics, "joc_ha_lease_renew_age_seconds{")
        .expect("the failsafe holder's renew age");
    assert!(renew_age >= ttl.as_secs_f64(), "{renew_age}");

    stack.db_server()?.start().await?;
    stack.endpoints.wait_single(None, FAILOVER).await?;
    wait_for(
        "the failsafe mark to go",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let pods = stack.pods().list(&ListParams::default()).await.ok()?;
            let marked = pods
                .items
                .iter()
                .any(|p| p.annotations().contains_key("joc-ha.dev/failsafe"));
            (!marked).then_some(())
        },
    )
    .await?;
    // The hand-off from the failsafe holder may still be under way: wait
    // for one member labeled active and behind the Service again.
    wait_for(
        "one member labeled active after the outage",
        FAILOVER,
        Duration::from_millis(100),
        || async { (stack.labeled_active().await.ok()?.len() == 1).then_some(()) },
    )
    .await?;
    stack.endpoints.wait_single(None, FAILOVER).await?;
    stack.endpoints.assert_never_two();
    Ok(())
}

/// Cut off from the database and the API server for a TTL, the holder
/// demotes itself (isolation check): its cockpit is told standby.
async fn isolated_holder_demotes(backend: Backend) -> anyhow::Result<()> {
    let (mut stack, active) = cluster(backend, 0).await?;
    let dir = stack
        .kubelet
        .pod_dir(&stack.options.namespace, &active)
        .expect("pod dir");
    stack.db_server()?.stop().await?;
    stack.plane.stop_apiserver().await?;
    let demoted = wait_for(
        "the isolated holder to demote",
        FAILOVER,
        Duration::from_millis(50),
        || async {
            let reports = role_files(&dir);
            (!reports.is_empty() && reports.iter().all(|r| !r.is_active_now())).then_some(())
        },
    )
    .await;
    stack.plane.start_apiserver().await?;
    stack.db_server()?.start().await?;
    demoted?;
    stack
        .endpoints
        .wait_single(None, Duration::from_secs(90))
        .await?;
    stack.endpoints.assert_never_two();
    Ok(())
}

/// What the cockpit and Prometheus see: `GET /role`, the role file, the
/// role-change command, `/metrics`, `/healthz` and `/readyz`.
async fn role_endpoints_metrics_and_command(backend: Backend) -> anyhow::Result<()> {
    let (stack, active) = cluster(backend, 0).await?;
    let standby = stack.member_other_than(&active).expect("a standby");
    let get = |pod: &str, path: &str| {
        let url = format!("{}{path}", stack.sidecar_url(pod).expect("sidecar port"));
        async move { joc_ha_tests::wait::http_get(&url, Duration::from_secs(5)).await }
    };
    // /role is for the cockpit container: on the loopback listener only.
    let get_local = |pod: &str, path: &str| {
        let url = format!(
            "{}{path}",
            stack.sidecar_local_url(pod).expect("loopback sidecar port")
        );
        async move { joc_ha_tests::wait::http_get(&url, Duration::from_secs(5)).await }
    };
    let (status, body) = get_local(&active, "/role").await?;
    assert_eq!(status, 200);
    let report: joc_ha_sidecar::role::RoleReport = serde_json::from_str(&body)?;
    assert_eq!(report.role, "active");
    assert!(report.is_active_now(), "{body}");
    let term = report.term.expect("an active role carries its term");
    let (_, body) = get_local(&standby, "/role").await?;
    let report: joc_ha_sidecar::role::RoleReport = serde_json::from_str(&body)?;
    assert_eq!(report.role, "standby");
    assert!(report.term.is_none());

    // The role file in the shared emptyDir says the same.
    let dir = stack
        .kubelet
        .pod_dir(&stack.options.namespace, &active)
        .expect("pod dir");
    assert!(
        role_files(&dir)
            .iter()
            .any(|r| r.is_active_now() && r.term == Some(term))
    );
    // The role-change command ran with the role and term.
    let log = wait_for(
        "the role-change command",
        FAILOVER,
        Duration::from_millis(100),
        || async {
            let text = std::fs::read_to_string(dir.join("role-changes.log")).ok()?;
            text.lines()
                .any(|l| l == format!("active {term}"))
                .then_some(text)
        },
    )
    .await?;
    assert!(!log.is_empty());

    let (status, metrics) = get(&active, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(metrics.contains("joc_ha_role{") && metrics.contains(&format!("member=\"{active}\"")));
    let role_line = metrics
        .lines()
        .find(|l| l.starts_with("joc_ha_role{"))
        .expect("joc_ha_role");
    assert!(role_line.ends_with(" 1"), "{role_line}");
    let term_line = metrics
        .lines()
        .find(|l| l.starts_with("joc_ha_lease_term{"))
        .expect("joc_ha_lease_term");
    assert!(term_line.ends_with(&format!(" {term}")), "{term_line}");
    // Renewals are timed in the histogram.
    wait_for(
        "a renew in the latency histogram",
        FAILOVER,
        Duration::from_millis(200),
        || async {
            let (_, metrics) = get(&active, "/metrics").await.ok()?;
            let count = metrics
                .lines()
                .find(|l| l.starts_with("joc_ha_renew_latency_seconds_count{"))?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()?;
            (count >= 1).then_some(())
        },
    )
    .await?;
    // The holder's renew age: present and below the TTL (it renews every
    // second); absent on the standby; no failsafe, no JOC view (generic).
    let (_, metrics) = get(&active, "/metrics").await?;
    let renew_age =
        metric_value(&metrics, "joc_ha_lease_renew_age_seconds{").expect("the holder's renew age");
    assert!((0.0..5.0).contains(&renew_age), "{renew_age}");
    assert_eq!(metric_value(&metrics, "joc_ha_failsafe{"), Some(0.0));
    assert!(!metrics.contains("joc_ha_joc_"), "{metrics}");
    let (_, metrics) = get(&standby, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "joc_ha_lease_renew_age_seconds{"),
        None,
        "{metrics}"
    );
    assert_eq!(get(&active, "/healthz").await?.0, 200);
    assert_eq!(get(&active, "/readyz").await?.0, 200);
    stack.endpoints.assert_never_two();
    Ok(())
}

macro_rules! on_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(joc_ha_tests::db::Backend::Postgres).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(joc_ha_tests::db::Backend::MariaDb).await
                }
            )*
        }
    };
}

on_backends!(
    sigkill_of_the_active,
    a_crashed_pod_is_taken_over_on_kubernetes_word,
    sigstop_beyond_the_ttl,
    deletion_of_the_active_pod,
    switchover_named_and_any,
    switchover_right_after_a_database_restart,
    switchover_rejections,
    hand_made_labels_are_corrected,
    database_down_for_everyone,
    isolated_holder_demotes,
    role_endpoints_metrics_and_command,
);
