//! The short fault campaign of `make test`: every fault kind once, in a
//! seeded random order, then a few random ones, on a 3-member cluster per
//! backend; every checker must find nothing. (`make chaos` runs ≥ 300.)
//! `JOC_HA_CHAOS_SEED` replays a run; the report goes to
//! `target/joc-ha-chaos/short/<backend>.json`.

use std::time::Duration;

use joc_ha_tests::db::Backend;
use joc_ha_tools::chaos::{ChaosConfig, ChaosReport, FaultKind, report_dir, run};

/// The campaign ran to its end: not aborted, every fault injected, every
/// kind of `kinds` among them.
fn assert_every_fault_ran(report: &ChaosReport, config: &ChaosConfig, kinds: &[FaultKind]) {
    let seed = config.seed;
    assert!(
        report.aborted.is_none(),
        "seed {seed}: {:?}",
        report.aborted
    );
    assert_eq!(
        report.faults, config.faults,
        "seed {seed}: every fault was injected"
    );
    for kind in kinds {
        assert!(
            report.by_kind.contains_key(kind.name()),
            "seed {seed}: {} never ran",
            kind.name()
        );
    }
}

async fn short_campaign(backend: Backend) -> anyhow::Result<()> {
    let seed = std::env::var("JOC_HA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut config = ChaosConfig::new(backend, seed);
    config.faults = FaultKind::ALL.len() + 3;
    config.each_kind_first = true;
    // Longer than the 5 s TTL: the holder must ride it out in failsafe.
    config.outage = Duration::from_secs(8);
    config.max_duration = Duration::from_secs(240);
    config.report_dir = Some(report_dir().join("short"));
    let report = run(&config).await?;
    assert_every_fault_ran(&report, &config, &FaultKind::ALL);
    assert!(report.events > 100, "seed {seed}: the workload ran");
    assert_eq!(
        report.double_active_endpoints, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert_eq!(
        report.overlapping_active, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert_eq!(report.lost_events, 0, "seed {seed}");
    assert_eq!(report.duplicate_events, 0, "seed {seed}");
    assert_eq!(
        report.term_order_violations, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert!(
        report.record_anomalies.is_empty(),
        "seed {seed}: {:?}",
        report.record_anomalies
    );
    assert_eq!(
        report.late_recoveries, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert!(report.is_clean());
    Ok(())
}

#[tokio::test]
async fn postgres_survives_every_fault() -> anyhow::Result<()> {
    short_campaign(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_survives_every_fault() -> anyhow::Result<()> {
    short_campaign(Backend::MariaDb).await
}

/// The short js7 campaign: every js7 fault kind once (freezes inside a JOC's
/// service start included), then two at random, on JOC stand-ins with the
/// operator's timings. Asserted today: never two active endpoints, no
/// switch request older than two polls left after any fault, services
/// running in the active pod's JOC after every fault, every recovery within
/// its bound. Two JOCs running services at once (fact 20) are reported and
/// asserted only with `JOC_HA_CHAOS_STRICT_SERVICES=1` (the campaign's
/// `--strict-services`), until fencing lands.
async fn short_js7_campaign(backend: Backend) -> anyhow::Result<()> {
    use joc_ha_tools::chaos::Workload;
    let seed = std::env::var("JOC_HA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut config = ChaosConfig::js7(backend, seed);
    config.faults = FaultKind::JS7.len() + 2;
    config.each_kind_first = true;
    config.outage = Duration::from_secs(8);
    config.max_duration = Duration::from_secs(420);
    config.strict_services = std::env::var("JOC_HA_CHAOS_STRICT_SERVICES").as_deref() == Ok("1");
    config.report_dir = Some(report_dir().join("short"));
    let report = run(&config).await?;
    assert_eq!(report.workload, Workload::Js7);
    assert_every_fault_ran(&report, &config, &FaultKind::JS7);
    assert!(report.active_periods > 0, "seed {seed}: JOC ran services");
    assert_eq!(
        report.double_active_endpoints, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert_eq!(
        report.stale_switch_requests, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert_eq!(
        report.services_missing, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert_eq!(
        report.late_recoveries, 0,
        "seed {seed}: {:?}",
        report.details
    );
    assert!(
        report.record_anomalies.is_empty(),
        "seed {seed}: {:?}",
        report.record_anomalies
    );
    assert!(
        report.fault_log.iter().all(|f| f.no_services_ms.is_some()),
        "seed {seed}: every fault has its time without services"
    );
    if config.strict_services {
        assert_eq!(
            report.services_overlaps, 0,
            "seed {seed}: {:?}",
            report.details
        );
    }
    println!(
        "seed {seed}: {} moments with two JOCs running services (longest {} ms, {} after freezes inside a start)",
        report.services_overlaps,
        report.longest_services_overlap_ms,
        report.services_overlaps_after_freezes
    );
    assert!(report.is_clean(), "seed {seed}: {:?}", report.details);
    Ok(())
}

#[tokio::test]
async fn js7_postgres_survives_every_fault() -> anyhow::Result<()> {
    short_js7_campaign(Backend::Postgres).await
}

#[tokio::test]
async fn js7_mariadb_survives_every_fault() -> anyhow::Result<()> {
    short_js7_campaign(Backend::MariaDb).await
}
