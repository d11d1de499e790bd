//! js7 mode, a fresh install (docs/joc-facts.md fact 9): no Controller is
//! registered yet, so JOC's active member blocks in the start of its
//! services and writes no heartbeat at all. The user must still reach
//! exactly one JOC through the Service `<name>` to register the first
//! Controller in its GUI; meanwhile JOC's active member must not move (a
//! standby taking over blocks the same way, and every blocked JOC starts
//! services once the Controller appears). After the registration the
//! cluster agrees as usual, and no two JOC instances ever run services at
//! once (judged from the stand-ins' service periods).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use joc_ha_tests::agreement::{host_of, now_ns, services_report, stack_services, wait_agreement};
use joc_ha_tests::db::Backend;
use joc_ha_tests::joc::{SecurityLevel, cluster_row, register_controller};
use joc_ha_tests::stack::{Stack, StackOptions, TEST_CONTROLLER_ID, TEST_CONTROLLER_URI};

const UP: Duration = Duration::from_secs(120);
/// The bound: one JOC reachable within 60 s of the pods being Ready.
const ONE_ENDPOINT: Duration = Duration::from_secs(60);
/// How long the waiting cluster is watched: four of JOC's heartbeat
/// timeouts (5 s under the operator's timings) and three of the stand-ins'
/// waits for a Controller (5 s), so that a takeover would have happened.
const WATCH: Duration = Duration::from_secs(20);
/// From the registration to agreement: the stand-in looks again for a
/// Controller every 5 s, then starts its services.
const AGREEMENT: Duration = Duration::from_secs(60);

async fn joc_active_pod(stack: &Stack) -> anyhow::Result<Option<String>> {
    Ok(cluster_row(&stack.database_url)
        .await?
        .map(|row| host_of(&row.member_id).to_owned()))
}

async fn fresh_install(backend: Backend) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        backend,
        register_controller: false,
        ..StackOptions::default()
    })
    .await?;
    // Every member is Ready: the standbys by their heartbeats, JOC's active
    // member by the heartbeat its sidecar keeps.
    stack.wait_members_ready(UP).await?;
    let ready = Instant::now();
    let first = stack.endpoints.wait_single(None, ONE_ENDPOINT).await?;
    let took = ready.elapsed();
    println!(
        "{backend:?}: no Controller; one endpoint {first} {took:?} after the members were Ready"
    );
    assert_eq!(
        joc_active_pod(&stack).await?.as_deref(),
        Some(first.as_str()),
        "the endpoint is JOC's active member, whose GUI registers the Controller"
    );

    // While no Controller is registered: the one endpoint stays, JOC's
    // active member does not move, and no JOC runs services.
    let watch_until = Instant::now() + WATCH;
    let mut looks = 0;
    while Instant::now() < watch_until {
        let routed = stack.endpoints.current();
        assert_eq!(
            routed,
            BTreeSet::from([first.clone()]),
            "the Service while JOC waits for a Controller"
        );
        assert_eq!(
            joc_active_pod(&stack).await?.as_deref(),
            Some(first.as_str()),
            "JOC's active member moved while it waited for a Controller (a takeover)"
        );
        looks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let waiting = stack_services(&stack, &[])?;
    assert!(
        waiting.periods.is_empty(),
        "a JOC ran services without a Controller: {}",
        waiting.summary()
    );

    // The user registers the Controller in that GUI.
    register_controller(
        &stack.database_url,
        TEST_CONTROLLER_ID,
        TEST_CONTROLLER_URI,
        SecurityLevel::Low,
    )
    .await?;
    let registered = Instant::now();
    let agreed = wait_agreement(&stack, None, AGREEMENT).await?;
    // Services running in the agreed member's JOC, as after any start.
    let services = joc_ha_tests::wait::wait_for(
        "services running in the agreed member's JOC",
        AGREEMENT,
        Duration::from_millis(100),
        || async {
            let now = now_ns();
            let report = services_report(&stack.periods_dir, &[], now).ok()?;
            report.running_at(&agreed.pod, now).then_some(report)
        },
    )
    .await?;
    println!(
        "{backend:?}: Controller registered; agreement on {} and its services after {:?} ({looks} looks while waiting)",
        agreed.pod,
        registered.elapsed()
    );
    assert_eq!(
        agreed.pod, first,
        "the JOC that waited is the one that starts its services"
    );
    assert!(
        services.overlaps.is_empty(),
        "two JOC instances ran services at once: {}",
        services.summary()
    );
    stack.endpoints.assert_never_two();
    let row = cluster_row(&stack.database_url)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no JOC_CLUSTER row"))?;
    assert_eq!(
        row.switch_member_id, None,
        "no switch request left: {row:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fresh_install_has_one_gui_and_agrees_once_a_controller_is_registered()
-> anyhow::Result<()> {
    fresh_install(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_fresh_install_has_one_gui_and_agrees_once_a_controller_is_registered()
-> anyhow::Result<()> {
    fresh_install(Backend::MariaDb).await
}
