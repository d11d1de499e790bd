//! js7 readiness of a restarted member (docs/joc-facts.md fact 22): after
//! its JOC's container process is killed, the restarted pod is not Ready,
//! its sidecar's `/readyz` fails and its lease row is not `ready` (so it is
//! no switch target) until the new stand-in process has written its own
//! `JOC_INSTANCES` row, although the previous process's heartbeat stays
//! fresh for the exceeded interval.

use std::time::{Duration, Instant};

use anyhow::Context;
use joc_ha_crds::names::pod as pod_names;
use joc_ha_tests::agreement::{host_of, wait_agreement};
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions, is_ready};
use joc_ha_tests::wait::http_get_status;
use k8s_openapi::api::core::v1::Pod;
use sqlx::Row;

const UP: Duration = Duration::from_secs(120);
/// The stand-ins' start to first heartbeat: longer than the time the old
/// heartbeat stays fresh (5 s), as for real JOC (10–20 s, fact 22), so a
/// readiness taken from the old heartbeat would show for seconds.
const STARTUP_DELAY: &str = "8s";
/// How long the sidecar may take to act on the kubelet's report of the
/// restart (a watch event, then one JOC read) on a loaded machine.
const REACTION: Duration = Duration::from_secs(2);
/// From the kill until the new process heartbeats and the pod is Ready.
const BOUND: Duration = Duration::from_secs(90);

/// (s since the kill, restarted, new row, pod Ready, /readyz 200, lease ready)
type Sample = (f64, bool, bool, bool, bool, bool);

/// The `joc` container's restart count, if it is running.
fn joc_running_restarts(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == pod_names::COCKPIT_CONTAINER)
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .map(|c| c.restart_count)
}

/// `ready` of the member's lease row (what makes it a hand-over target).
async fn lease_ready(stack: &Stack, member: &str) -> anyhow::Result<bool> {
    let mut conn = joc_ha_tests::joc::connect(&stack.database_url).await?;
    let row = sqlx::query("SELECT ready FROM joc_ha_member WHERE member = $1")
        .bind(member)
        .fetch_one(&mut conn)
        .await
        .context("reading the lease member row")?;
    Ok(row.try_get::<bool, _>(0)?)
}

/// This member's JOC_INSTANCES STARTED_AT (epoch s).
async fn started_at(stack: &Stack, member: &str) -> anyhow::Result<Option<i64>> {
    let instances = joc_ha_tests::joc::instances(&stack.database_url).await?;
    Ok(instances
        .iter()
        .find(|i| host_of(&i.member_id) == member)
        .map(|i| i.started_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_is_not_ready_until_its_new_joc_heartbeats() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        backend: Backend::Postgres,
        joc_startup_delay: Some(STARTUP_DELAY.into()),
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let first = wait_agreement(&stack, None, UP).await?;
    let victim = first.pod.clone();
    let pods = stack.pods();
    let before = joc_running_restarts(&pods.get(&victim).await?).context("joc running")?;
    let old_start = started_at(&stack, &victim)
        .await?
        .context("the victim's row")?;
    let readyz = format!(
        "{}/readyz",
        stack.sidecar_url(&victim).context("no sidecar port")?
    );

    // Only JOC's container process dies; the sidecar lives on and sees the
    // container's new run in its own pod's status.
    let joc = stack.cockpit(&victim).context("JOC process")?;
    let killed = Instant::now();
    joc.kill().await?;

    // Sampled until the pod is Ready again after the new process wrote its
    // row. Each sample: (s since the kill, restarted, new row, pod Ready,
    // /readyz 200, lease ready).
    let mut samples: Vec<Sample> = Vec::new();
    let mut violations = Vec::new();
    let mut new_row_at = None;
    loop {
        anyhow::ensure!(
            killed.elapsed() < BOUND,
            "the restarted pod was not Ready {BOUND:?} after the kill; samples: {samples:?}"
        );
        let pod = pods.get(&victim).await?;
        let restarted = joc_running_restarts(&pod).is_some_and(|n| n > before);
        let new_row = started_at(&stack, &victim)
            .await?
            .is_some_and(|s| s != old_start);
        let pod_ready = is_ready(&pod);
        let sidecar_ready = http_get_status(&readyz, Duration::from_secs(2))
            .await
            .is_ok_and(|s| s == 200);
        let in_lease = lease_ready(&stack, &victim).await?;
        let at = killed.elapsed().as_secs_f64();
        if new_row && new_row_at.is_none() {
            new_row_at = Some(at);
        }
        // The claim: from the container's restart until the new process's
        // first write, nothing says this member is ready. The sidecar hears
        // of the restart through its watch and looks at JOC at once;
        // REACTION (generous, for a loaded machine) is its time to do so,
        // counted from the first sample that saw the restart. The old JVM's
        // row stays fresh for 5 s and the new one writes after 8 s, so most
        // of the window is still checked.
        let restart_seen_at = samples.iter().find(|s| s.1).map(|s| s.0);
        let reacted = restart_seen_at.is_some_and(|seen| at - seen >= REACTION.as_secs_f64());
        if reacted && restarted && !new_row && (pod_ready || sidecar_ready || in_lease) {
            violations.push((at, pod_ready, sidecar_ready, in_lease));
        }
        samples.push((at, restarted, new_row, pod_ready, sidecar_ready, in_lease));
        if restarted && new_row && pod_ready && sidecar_ready && in_lease {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restart_seen = samples
        .iter()
        .find(|s| s.1)
        .map(|s| s.0)
        .context("the restart was seen")?;
    let new_row_at = new_row_at.context("the new row was seen")?;
    println!(
        "killed {victim}'s JOC: container restarted by {restart_seen:.1} s, new JOC row at {new_row_at:.1} s, Ready again at {:.1} s; {} samples",
        killed.elapsed().as_secs_f64(),
        samples.len()
    );
    assert!(
        violations.is_empty(),
        "ready before the new JOC process heartbeated (s, pod Ready, /readyz, lease ready): {violations:?}"
    );
    // The window the check covers is real: the old heartbeat was fresh for
    // part of it (the restart came before the new row by seconds).
    assert!(
        samples
            .iter()
            .filter(|s| s.1 && !s.2 && s.0 - restart_seen >= REACTION.as_secs_f64())
            .count()
            >= 10,
        "fewer than 10 checked samples between the restart (+{REACTION:?}) and the new row: {samples:?}"
    );
    Ok(())
}
