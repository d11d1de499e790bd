//! The randomized fault campaign (`make chaos`; a short run is part of
//! `make test`): a 3-member JocCluster on the whole stack (real sidecars,
//! stand-in cockpits running the history workload, operator, control plane,
//! a private PostgreSQL or MariaDB), one seeded random fault after another,
//! and four checkers:
//!
//! * never two pods behind the active Service ([`EndpointRecorder`]);
//! * never two stand-ins active at once, by their periods on
//!   CLOCK_MONOTONIC ([`joc_ha_tests::lease_history::violations`]);
//! * every event of the simulated Controller in the history exactly once
//!   ([`joc_ha_tests::history::check`]);
//! * after each fault, one active endpoint again within the fault's bound
//!   ([`FaultKind::bound`]).
//!
//! With the js7 workload (`--workload js7`) the members run JOC stand-ins
//! (`joc-standin`) with the operator's JOC timings instead of the history
//! workload, and the checkers are JOC's:
//!
//! * never two pods behind the active Service;
//! * never two JOC instances running services at once, judged from the
//!   stand-ins' service periods ([`joc_ha_tests::agreement::services_report`], not
//!   from `MEMBER_ID`, docs/joc-facts.md fact 20): a reported count until
//!   fencing lands; `strict_services` makes it fail the campaign;
//! * after every fault, within one more poll, no switch request older than
//!   two polls left in `JOC_CLUSTER` (fact 13);
//! * after every fault, services running in the one active pod's JOC, and
//!   the longest time with no JOC running services from the fault's start
//!   until then (fact 21), reported per fault kind.
//!
//! The report goes to `<repository>/target/joc-ha-chaos/<backend>.json`
//! (`<backend>-js7.json` for the js7 workload).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use joc_ha_crds::names::pod as pod_names;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::json;

use joc_ha_tests::agreement::{Frozen, host_of, now_ns, services_report};
use joc_ha_tests::db::Backend;
use joc_ha_tests::history::{self, Dialect};
use joc_ha_tests::lease_history::group::{clock_an_hour_ahead, monotonic_ns};
use joc_ha_tests::lease_history::{Period, Violation, read_records, violations};
use joc_ha_tests::stack::{Stack, StackOptions, WorkloadMode};
use joc_ha_tests::wait::wait_for;

/// The faults, each aimed at the active member unless it says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of the active pod's sidecar and cockpit (a crashed pod; its
    /// containers stay down until another member is active).
    KillActive,
    /// SIGKILL of the active pod's sidecar only: its cockpit lives on and
    /// must stop acting by itself (not in the default mix; `--kinds`).
    KillSidecar,
    /// SIGSTOP of the active sidecar (and, every other time, its cockpit)
    /// for longer than the TTL, then SIGCONT.
    FreezeActive,
    /// The active pod cut off from the database only (its proxy), for
    /// longer than the TTL, then healed.
    CutActive,
    /// The database down for everyone for the outage time, then back.
    DatabaseDown,
    /// The database stopped (as by a crash) and started again at once.
    DatabaseRestart,
    /// The API server stopped and started again.
    ApiServerRestart,
    /// `kubectl delete pod` of the active pod (graceful, preStop).
    DeleteActive,
    /// A switch-over annotation every 200 ms, to random members or `any`.
    SwitchoverStorm,
    /// A random member's sidecar restarted with its wall clock an hour
    /// ahead (libfaketime), or back to the true time if it was skewed.
    ClockSkew,
    /// js7: a switch-over to a random standby by annotation.
    Switchover,
    /// js7: a switch-over to a random standby whose JOC container is frozen
    /// 0–1.2 s after `JOC_CLUSTER.MEMBER_ID` names it, before its services
    /// start (docs/joc-facts.md facts 11, 20), for longer than JOC's
    /// heartbeat timeout; then thawed.
    FreezeInStart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillActive,
        FaultKind::FreezeActive,
        FaultKind::CutActive,
        FaultKind::DatabaseDown,
        FaultKind::DatabaseRestart,
        FaultKind::ApiServerRestart,
        FaultKind::DeleteActive,
        FaultKind::SwitchoverStorm,
        FaultKind::ClockSkew,
    ];

    /// Kinds that only run when asked for by name.
    pub const EXTRA: [FaultKind; 1] = [FaultKind::KillSidecar];

    /// The js7 workload's mix: the process, pod, database and control-plane
    /// faults, a switch-over, and freezes inside a JOC's service start.
    pub const JS7: [FaultKind; 9] = [
        FaultKind::KillActive,
        FaultKind::FreezeActive,
        FaultKind::FreezeInStart,
        FaultKind::CutActive,
        FaultKind::DatabaseDown,
        FaultKind::DatabaseRestart,
        FaultKind::ApiServerRestart,
        FaultKind::DeleteActive,
        FaultKind::Switchover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillActive => "kill-active",
            FaultKind::KillSidecar => "kill-sidecar",
            FaultKind::FreezeActive => "freeze-active",
            FaultKind::CutActive => "cut-active",
            FaultKind::DatabaseDown => "database-down",
            FaultKind::DatabaseRestart => "database-restart",
            FaultKind::ApiServerRestart => "apiserver-restart",
            FaultKind::DeleteActive => "delete-active",
            FaultKind::SwitchoverStorm => "switchover-storm",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::Switchover => "switchover",
            FaultKind::FreezeInStart => "freeze-in-start",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::EXTRA)
            .chain(FaultKind::JS7)
            .find(|k| k.name() == name)
    }

    /// Relative frequency in the random mix: the 30 s outage and the API
    /// server restart are drawn a third as often as the others: the outage
    /// would take most of the time, and after an API server restart the
    /// controller-manager's watches back off (up to 30 s, reset only after
    /// 2 min without error), which the campaign waits out before the next
    /// fault.
    pub fn weight(self) -> u32 {
        match self {
            FaultKind::DatabaseDown | FaultKind::ApiServerRestart => 1,
            _ => 3,
        }
    }

    /// The documented bound on recovery (one active endpoint again), from
    /// the lease settings. Recovery is timed from the fault's start when it
    /// takes the active member away (kill, freeze, cut-off, deletion, clock
    /// skew of the active member), else from its end (the database or API
    /// server back, the last annotation):
    ///
    /// * process and pod faults (kill, deletion, clock skew, API server
    ///   restart): TTL + 5 s — a crashed holder's lease expires within the
    ///   TTL, the rest is labels and the EndpointSlice controller; after an
    ///   API server restart, counted from when the EndpointSlice controller
    ///   follows changes again (see `FaultRecord::control_plane_lag_ms`);
    /// * faults that keep the holder's session or lease (freeze, cut-off,
    ///   switch-over storms): 2 × TTL + 5 s — the TTL, plus up to one role
    ///   validity for a failsafe holder to step back, or a switch-over's
    ///   wait for its target's label;
    /// * the database down or restarted: TTL + 5 s (the sidecars' longest
    ///   reconnect back-off) + 5 s, from the database's return.
    pub fn bound(self, ttl: Duration) -> Duration {
        match self {
            FaultKind::KillActive
            | FaultKind::KillSidecar
            | FaultKind::DeleteActive
            | FaultKind::ClockSkew
            | FaultKind::ApiServerRestart => ttl + Duration::from_secs(5),
            FaultKind::FreezeActive
            | FaultKind::CutActive
            | FaultKind::SwitchoverStorm
            | FaultKind::Switchover
            | FaultKind::FreezeInStart => ttl * 2 + Duration::from_secs(5),
            FaultKind::DatabaseDown | FaultKind::DatabaseRestart => ttl + Duration::from_secs(10),
        }
    }
}

/// The JocCluster's last recorded switch-over, if it can be read.
async fn last_switchover(stack: &Stack) -> Option<joc_ha_crds::v1alpha1::SwitchoverStatus> {
    stack.cluster().await.ok()?.status?.last_switchover
}

/// What the members run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Stand-in cockpits following the sidecar's role report, writing the
    /// simulated Controller's history.
    Generic,
    /// JOC stand-ins electing JOC's own active member with the operator's
    /// timings (poll 1 s, timeout 5 s).
    Js7,
}

impl Workload {
    pub fn from_name(name: &str) -> Option<Workload> {
        match name {
            "generic" => Some(Workload::Generic),
            "js7" => Some(Workload::Js7),
            _ => None,
        }
    }
}

/// JOC's polling interval and heartbeat timeout under the operator's
/// timings (the js7 workload).
pub const JOC_POLL: Duration = Duration::from_secs(1);
pub const JOC_EXCEEDED: Duration = Duration::from_secs(5);

/// How to run a campaign.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub backend: Backend,
    pub seed: u64,
    /// Faults to inject (fewer if `max_duration` runs out first).
    pub faults: usize,
    /// No new fault after this long.
    pub max_duration: Duration,
    /// How long `database-down` keeps the database down.
    pub outage: Duration,
    /// The kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// Inject every kind once (in random order) before drawing at random.
    pub each_kind_first: bool,
    /// Lease settings of the cluster.
    pub ttl: Duration,
    pub renew_interval: Duration,
    /// Where to write `<backend>.json` (None: [`report_dir`]).
    pub report_dir: Option<PathBuf>,
    pub workload: Workload,
    /// js7: two JOC instances running services at once fails the campaign
    /// (off until joc-ha fences a JOC that lost the lease: JOC itself lets a
    /// thawed member finish a start, docs/joc-facts.md fact 20).
    pub strict_services: bool,
}

impl ChaosConfig {
    pub fn new(backend: Backend, seed: u64) -> ChaosConfig {
        ChaosConfig {
            backend,
            seed,
            faults: 300,
            max_duration: Duration::from_secs(60 * 60),
            outage: Duration::from_secs(30),
            kinds: FaultKind::ALL.to_vec(),
            each_kind_first: true,
            ttl: Duration::from_secs(5),
            renew_interval: Duration::from_secs(1),
            report_dir: None,
            workload: Workload::Generic,
            strict_services: false,
        }
    }

    /// The js7 workload with its mix of faults.
    pub fn js7(backend: Backend, seed: u64) -> ChaosConfig {
        ChaosConfig {
            workload: Workload::Js7,
            kinds: FaultKind::JS7.to_vec(),
            ..ChaosConfig::new(backend, seed)
        }
    }

    /// The bound on a fault's recovery: the kind's, and with the js7
    /// workload JOC's own take-over on top (the label waits for JOC: its
    /// heartbeat timeout, whole seconds strictly exceeded, and the 1 s
    /// before services start, docs/joc-facts.md fact 11).
    pub fn bound(&self, kind: FaultKind) -> Duration {
        match self.workload {
            Workload::Generic => kind.bound(self.ttl),
            Workload::Js7 => kind.bound(self.ttl) + JOC_EXCEEDED + JOC_POLL * 2,
        }
    }
}

/// `<repository root>/target/joc-ha-chaos`, wherever cargo's target is.
pub fn report_dir() -> PathBuf {
    crate::bench::repository_root()
        .join("target")
        .join("joc-ha-chaos")
}

/// One injected fault and how the cluster came back.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// The member the fault was aimed at, if any.
    pub target: Option<String>,
    /// The active member before the fault.
    pub active_before: String,
    /// The one active endpoint after it.
    pub active_after: String,
    /// Seconds since the campaign started.
    pub at_s: f64,
    /// How long the fault itself lasted (outage, freeze, cut, storm).
    pub held_ms: u64,
    pub recovery_ms: u64,
    /// The kind's bound, plus `control_plane_lag_ms`.
    pub bound_ms: u64,
    /// After an API server restart: how long kube-controller-manager's
    /// EndpointSlice controller took to follow changes again (the canary),
    /// counted from the API server's return. No labeler can put a new active
    /// pod into the Service before that, so the bound starts after it.
    pub control_plane_lag_ms: u64,
    /// js7: the longest time with no JOC running services, from the fault's
    /// start until services ran in the one active pod's JOC.
    pub no_services_ms: Option<u64>,
    /// js7: services never ran in the active pod's JOC within the bound.
    pub services_missing: bool,
    /// js7: a switch request older than two polls was still in
    /// `JOC_CLUSTER` one poll after the recovery (what it was).
    pub stale_switch: Option<String>,
    /// freeze-in-start: the freeze came before the target's services
    /// started, and how long after `MEMBER_ID` named it.
    pub froze_in_start: Option<bool>,
    pub froze_after_move_ms: Option<u64>,
    /// CLOCK_MONOTONIC ns at the fault's start (to tell which fault a
    /// services overlap followed).
    pub started_ns: i64,
    /// js7: moments with two JOCs running services that began after this
    /// fault and before the next one.
    pub services_overlaps: usize,
}

/// What a campaign found. The goal: every count zero.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub backend: String,
    pub workload: Workload,
    pub seed: u64,
    pub faults: usize,
    pub double_active_endpoints: usize,
    pub overlapping_active: usize,
    pub lost_events: i64,
    pub duplicate_events: i64,
    pub max_recovery_ms: u64,
    /// Recoveries slower than their bound.
    pub late_recoveries: usize,
    /// Stand-in periods whose term did not exceed an earlier one's.
    pub term_order_violations: usize,
    /// Period records that make no sense (e.g. active twice without standby).
    pub record_anomalies: Vec<String>,
    pub events: i64,
    pub active_periods: usize,
    pub duration_s: f64,
    /// Faults, max and median recovery and bound per kind.
    pub by_kind: BTreeMap<String, KindSummary>,
    /// js7: moments with two JOC instances running services (from the
    /// service periods), the longest, and whether they fail the campaign.
    pub services_overlaps: usize,
    pub longest_services_overlap_ms: u64,
    /// Service-period overlaps that followed a freeze-in-start fault.
    pub services_overlaps_after_freezes: usize,
    pub strict_services: bool,
    /// js7: faults after which no JOC ran services in the active pod.
    pub services_missing: usize,
    /// js7: faults after which a switch request older than two polls stayed.
    pub stale_switch_requests: usize,
    /// freeze-in-start faults whose freeze landed before the services start.
    pub freezes_in_start: usize,
    /// Why the campaign stopped early, if it did.
    pub aborted: Option<String>,
    /// The first violations found, in words.
    pub details: Vec<String>,
    pub fault_log: Vec<FaultRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub faults: usize,
    pub max_recovery_ms: u64,
    pub p50_recovery_ms: u64,
    pub bound_ms: u64,
    /// js7: the longest time with no JOC running services after a fault of
    /// this kind: median, 99th percentile, maximum.
    pub no_services_ms: Option<Percentiles>,
    /// js7: services overlaps that followed a fault of this kind.
    pub services_overlaps: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles; None for no values.
    pub fn of(values: &[u64]) -> Option<Percentiles> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        (!sorted.is_empty()).then(|| Percentiles {
            p50: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

impl ChaosReport {
    /// Every checker found nothing, every fault recovered in time, and the
    /// campaign ran to its end.
    pub fn is_clean(&self) -> bool {
        self.double_active_endpoints == 0
            && self.overlapping_active == 0
            && self.lost_events == 0
            && self.duplicate_events == 0
            && self.late_recoveries == 0
            && self.term_order_violations == 0
            && self.record_anomalies.is_empty()
            && self.services_missing == 0
            && self.stale_switch_requests == 0
            && (!self.strict_services || self.services_overlaps == 0)
            && self.aborted.is_none()
    }

    /// A table for people.
    pub fn summary(&self) -> String {
        let js7 = self.workload == Workload::Js7;
        let mut out = if js7 {
            format!(
                "js7 fault campaign on {} (seed {}): {} faults in {:.0} s, {} JOC service periods\n",
                self.backend, self.seed, self.faults, self.duration_s, self.active_periods
            )
        } else {
            format!(
                "fault campaign on {} (seed {}): {} faults in {:.0} s, {} events, {} active periods\n",
                self.backend,
                self.seed,
                self.faults,
                self.duration_s,
                self.events,
                self.active_periods
            )
        };
        out.push_str(&format!(
            "  {:<18} {:>6} {:>10} {:>10} {:>10}",
            "fault", "count", "p50 ms", "max ms", "bound ms"
        ));
        if js7 {
            out.push_str("   no services p50 / p99 / max ms   overlaps");
        }
        out.push('\n');
        for (kind, s) in &self.by_kind {
            out.push_str(&format!(
                "  {:<18} {:>6} {:>10} {:>10} {:>10}",
                kind, s.faults, s.p50_recovery_ms, s.max_recovery_ms, s.bound_ms
            ));
            if let Some(p) = s.no_services_ms {
                out.push_str(&format!(
                    "   {:>6} / {:>6} / {:>6}   {:>8}",
                    p.p50, p.p99, p.max, s.services_overlaps
                ));
            }
            out.push('\n');
        }
        let services_goal = if self.strict_services {
            0
        } else {
            self.services_overlaps as i64
        };
        let checks: Vec<(&str, i64, i64)> = if js7 {
            vec![
                (
                    "double active endpoints",
                    self.double_active_endpoints as i64,
                    0,
                ),
                (
                    "two JOCs running services",
                    self.services_overlaps as i64,
                    services_goal,
                ),
                (
                    "stale switch requests",
                    self.stale_switch_requests as i64,
                    0,
                ),
                ("no services after fault", self.services_missing as i64, 0),
                ("late recoveries", self.late_recoveries as i64, 0),
                ("record anomalies", self.record_anomalies.len() as i64, 0),
            ]
        } else {
            vec![
                (
                    "double active endpoints",
                    self.double_active_endpoints as i64,
                    0,
                ),
                (
                    "overlapping active stand-ins",
                    self.overlapping_active as i64,
                    0,
                ),
                ("lost events", self.lost_events, 0),
                ("duplicate events", self.duplicate_events, 0),
                ("late recoveries", self.late_recoveries as i64, 0),
                (
                    "term order violations",
                    self.term_order_violations as i64,
                    0,
                ),
                ("record anomalies", self.record_anomalies.len() as i64, 0),
            ]
        };
        for (name, value, goal) in checks {
            let mark = if value != goal {
                "FAIL"
            } else if value != 0 {
                "reported (--strict-services fails on it)"
            } else {
                "ok"
            };
            out.push_str(&format!("  {name:<30} {value:>6}   {mark}\n"));
        }
        if js7 {
            out.push_str(&format!(
                "  {:<30} {:>6} ms ({} of them after freezes inside a service start)\n",
                "longest services overlap",
                self.longest_services_overlap_ms,
                self.services_overlaps_after_freezes
            ));
            out.push_str(&format!(
                "  {:<30} {:>6}\n",
                "freezes inside a start", self.freezes_in_start
            ));
        }
        out.push_str(&format!(
            "  {:<30} {:>6} ms\n",
            "max recovery", self.max_recovery_ms
        ));
        if let Some(why) = &self.aborted {
            out.push_str(&format!("  ABORTED: {why}\n"));
        }
        for detail in self.details.iter().take(10) {
            out.push_str(&format!("  - {detail}\n"));
        }
        out
    }

    /// Writes `<dir>/<backend>.json`; returns the path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let name = match self.workload {
            Workload::Generic => self.backend.clone(),
            Workload::Js7 => format!("{}-js7", self.backend),
        };
        let path = dir.join(format!("{name}.json"));
        let mut value = serde_json::to_value(self)?;
        value["summary"] = json!(self.summary());
        std::fs::write(&path, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Runs one campaign and writes its report. Errors only when the stack
/// cannot be built or checked; a campaign cut short by a fault that never
/// recovered is reported (`aborted`).
pub async fn run(config: &ChaosConfig) -> Result<ChaosReport> {
    eprintln!(
        "chaos {}: seed {} ({} faults, at most {} min)",
        config.backend.name(),
        config.seed,
        config.faults,
        config.max_duration.as_secs() / 60
    );
    let js7 = config.workload == Workload::Js7;
    let mut stack = Stack::start(StackOptions {
        backend: config.backend,
        // The history workload follows the sidecar's role report (generic
        // mode); the js7 workload runs JOC stand-ins with the operator's
        // JOC timings (StackOptions' default).
        history: !js7,
        workload: if js7 {
            WorkloadMode::Js7
        } else {
            WorkloadMode::Generic
        },
        db_proxy: true,
        ttl: format!("{}ms", config.ttl.as_millis()),
        renew_interval: format!("{}ms", config.renew_interval.as_millis()),
        ..StackOptions::default()
    })
    .await?;
    let started = Instant::now();
    stack.wait_members_ready(Duration::from_secs(180)).await?;
    stack
        .endpoints
        .wait_single(None, Duration::from_secs(60))
        .await?;
    let controller = (!js7).then(|| Controller::start(stack.database_url.clone()));

    let mut campaign = Campaign {
        config,
        rng: StdRng::seed_from_u64(config.seed),
        skewed: Vec::new(),
        freezes: 0,
        frozen: Vec::new(),
        log: Vec::new(),
        started,
        canary: Canary::create(&stack).await?,
    };
    let aborted = campaign.inject_all(&mut stack).await.err();
    if let Some(error) = &aborted {
        eprintln!("chaos {}: stopped early: {error:#}", config.backend.name());
    }

    // Let the last events drain into the history, then check everything.
    let mut details = Vec::new();
    let history = match controller {
        Some(controller) => {
            controller.stop().await;
            let drained = drain(&stack, Duration::from_secs(120)).await;
            if let Err(error) = &drained {
                details.push(format!("history not drained: {error:#}"));
            }
            let mut conn = history::connect(&stack.database_url).await?;
            history::check(&mut conn).await?
        }
        None => history::HistoryReport::default(),
    };
    let observed_until = monotonic_ns();
    let (periods, mut anomalies) = standin_periods(&stack.periods_dir, observed_until)?;
    // js7: who ran JOC's services when, with the frozen times cut out.
    let services = if js7 {
        let report = services_report(&stack.periods_dir, &campaign.frozen, now_ns())?;
        anomalies.extend(report.anomalies.iter().cloned());
        Some(report)
    } else {
        None
    };
    let found = violations(&periods);
    let overlaps: Vec<&Violation> = found
        .iter()
        .filter(|v| matches!(v, Violation::Overlap { .. }))
        .collect();
    // The same member told the same term again after a pause is no fencing
    // problem; any other term that does not increase is.
    let term_order: Vec<&Violation> = found
        .iter()
        .filter(|v| match v {
            Violation::TermOrder { earlier, later } => {
                !(earlier.instance == later.instance && earlier.term == later.term)
            }
            Violation::Overlap { .. } => false,
        })
        .collect();
    let doubles = stack.endpoints.violations();
    details.extend(overlaps.iter().take(5).map(|v| v.to_string()));
    details.extend(term_order.iter().take(5).map(|v| v.to_string()));
    details.extend(
        doubles
            .iter()
            .take(5)
            .map(|pods| format!("the active Service routed to {pods:?}")),
    );

    let mut log = campaign.log;
    // Each services overlap to the fault it followed.
    let mut overlap_after = Vec::new();
    if let Some(report) = &services {
        for o in &report.overlaps {
            let fault = log.iter().rposition(|f| f.started_ns <= o.start_ns);
            if let Some(i) = fault {
                log[i].services_overlaps += 1;
            }
            overlap_after.push(fault.map(|i| (log[i].kind.name(), log[i].at_s)));
        }
    }
    let mut by_kind: BTreeMap<String, KindSummary> = BTreeMap::new();
    let mut kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .chain(FaultKind::EXTRA)
        .chain(FaultKind::JS7)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let mut times: Vec<u64> = log
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.recovery_ms)
            .collect();
        if times.is_empty() {
            continue;
        }
        times.sort_unstable();
        by_kind.insert(
            kind.name().to_owned(),
            KindSummary {
                faults: times.len(),
                max_recovery_ms: times.last().copied().unwrap_or(0),
                p50_recovery_ms: times[times.len() / 2],
                bound_ms: config.bound(kind).as_millis() as u64,
                no_services_ms: Percentiles::of(
                    &log.iter()
                        .filter(|f| f.kind == kind)
                        .filter_map(|f| f.no_services_ms)
                        .collect::<Vec<_>>(),
                ),
                services_overlaps: log
                    .iter()
                    .filter(|f| f.kind == kind)
                    .map(|f| f.services_overlaps)
                    .sum(),
            },
        );
    }
    // js7: two JOCs running services, and which followed a freeze inside a
    // service start (fact 20: the thawed JOC finishes its start).
    let services_overlaps = services.as_ref().map_or(0, |r| r.overlaps.len());
    let longest_services_overlap_ms = services.as_ref().map_or(0, |r| {
        r.overlaps
            .iter()
            .map(|o| o.duration().as_millis() as u64)
            .max()
            .unwrap_or(0)
    });
    let services_overlaps_after_freezes = log
        .iter()
        .filter(|f| f.kind == FaultKind::FreezeInStart)
        .map(|f| f.services_overlaps)
        .sum();
    if let Some(report) = &services {
        details.extend(
            report
                .overlaps
                .iter()
                .zip(&overlap_after)
                .take(10)
                .map(|(o, after)| {
                    let after = after.map_or("before the first fault".to_owned(), |(kind, at)| {
                        format!("after {kind} at {at:.0} s")
                    });
                    format!(
                        "{} and {} ran JOC's services at once for {:?}, {after}",
                        o.a,
                        o.b,
                        o.duration()
                    )
                }),
        );
    }
    for f in &log {
        if let Some(stale) = &f.stale_switch {
            details.push(format!(
                "{} at {:.0} s: switch request left: {stale}",
                f.kind.name(),
                f.at_s
            ));
        }
        if f.services_missing {
            details.push(format!(
                "{} at {:.0} s: no JOC services in the pod the Service routes to (active after the recovery: {})",
                f.kind.name(),
                f.at_s,
                f.active_after
            ));
        }
    }
    for late in log.iter().filter(|f| f.recovery_ms > f.bound_ms) {
        details.push(format!(
            "{} at {:.0} s: recovered after {} ms (bound {} ms)",
            late.kind.name(),
            late.at_s,
            late.recovery_ms,
            late.bound_ms
        ));
    }
    let report = ChaosReport {
        backend: config.backend.name().to_owned(),
        workload: config.workload,
        seed: config.seed,
        faults: log.len(),
        double_active_endpoints: doubles.len(),
        overlapping_active: overlaps.len(),
        lost_events: history.lost,
        duplicate_events: history.duplicates,
        max_recovery_ms: log.iter().map(|f| f.recovery_ms).max().unwrap_or(0),
        late_recoveries: log.iter().filter(|f| f.recovery_ms > f.bound_ms).count(),
        term_order_violations: term_order.len(),
        record_anomalies: anomalies,
        events: history.events,
        active_periods: services.as_ref().map_or(periods.len(), |r| r.periods.len()),
        duration_s: started.elapsed().as_secs_f64(),
        by_kind,
        services_overlaps,
        longest_services_overlap_ms,
        services_overlaps_after_freezes,
        strict_services: config.strict_services,
        services_missing: log.iter().filter(|f| f.services_missing).count(),
        stale_switch_requests: log.iter().filter(|f| f.stale_switch.is_some()).count(),
        freezes_in_start: log
            .iter()
            .filter(|f| f.froze_in_start == Some(true))
            .count(),
        aborted: aborted.map(|e| format!("{e:#}")),
        details,
        fault_log: log,
    };
    let dir = config.report_dir.clone().unwrap_or_else(report_dir);
    let path = report.write(&dir)?;
    println!("{}", report.summary());
    println!("report: {}", path.display());
    if !report.is_clean() {
        // Keep the logs and period files of a failed campaign.
        let logs = dir.join(format!("{}-logs", report.backend));
        let _ = std::fs::remove_dir_all(&logs);
        copy_logs(stack.kubelet.dir(), &logs.join("pods"))?;
        copy_logs(&stack.periods_dir, &logs.join("periods"))?;
        copy_logs(&stack.plane.log_dir(), &logs.join("controlplane"))?;
        println!("logs and stand-in periods kept in {}", logs.display());
    }
    Ok(report)
}

/// A pod a fault took away: by name and uid, since a deleted member comes
/// back under its name.
#[derive(Debug, Clone)]
struct Victim {
    name: String,
    uid: Option<String>,
}

struct Campaign<'a> {
    config: &'a ChaosConfig,
    rng: StdRng,
    /// Members whose sidecar runs with its clock an hour ahead.
    skewed: Vec<String>,
    freezes: u32,
    /// JOC stand-ins the campaign froze (their services did not run then).
    frozen: Vec<Frozen>,
    log: Vec<FaultRecord>,
    started: Instant,
    canary: Canary,
}

/// Generous cap on one recovery: past it the campaign stops.
const GIVE_UP: Duration = Duration::from_secs(90);

impl Campaign<'_> {
    async fn inject_all(&mut self, stack: &mut Stack) -> Result<()> {
        let mut order: Vec<FaultKind> = Vec::new();
        if self.config.each_kind_first {
            order = self.config.kinds.clone();
            order.shuffle(&mut self.rng);
        }
        let weights: Vec<u32> = self.config.kinds.iter().map(|k| k.weight()).collect();
        let total: u32 = weights.iter().sum();
        if total == 0 {
            bail!("no fault kinds to draw from");
        }
        for index in 0..self.config.faults {
            if self.started.elapsed() >= self.config.max_duration {
                eprintln!(
                    "chaos {}: time is up after {index} faults",
                    self.config.backend.name()
                );
                break;
            }
            let kind = match order.get(index) {
                Some(kind) => *kind,
                None => {
                    let mut draw = self.rng.random_range(0..total);
                    let mut chosen = self.config.kinds[0];
                    for (kind, weight) in self.config.kinds.iter().zip(&weights) {
                        if draw < *weight {
                            chosen = *kind;
                            break;
                        }
                        draw -= weight;
                    }
                    chosen
                }
            };
            let active = settle(stack, &self.canary).await.with_context(|| {
                format!("the cluster did not settle before fault {}", index + 1)
            })?;
            let from_ns = now_ns();
            let mut record = self
                .inject(stack, kind, active)
                .await
                .with_context(|| format!("fault {} ({})", index + 1, kind.name()))?;
            record.started_ns = from_ns;
            if self.config.workload == Workload::Js7 {
                self.js7_checks(stack, &mut record, from_ns)
                    .await
                    .with_context(|| format!("fault {} ({})", index + 1, kind.name()))?;
            }
            let mut js7 = String::new();
            if let Some(gap) = record.no_services_ms {
                js7.push_str(&format!(", no JOC services for {gap} ms"));
            }
            if let (Some(inside), Some(after)) = (record.froze_in_start, record.froze_after_move_ms)
            {
                js7.push_str(&format!(
                    ", frozen {after} ms after MEMBER_ID moved ({})",
                    if inside {
                        "inside the start"
                    } else {
                        "services had started"
                    }
                ));
            }
            if let Some(stale) = &record.stale_switch {
                js7.push_str(&format!(", STALE SWITCH REQUEST {stale}"));
            }
            if record.services_missing {
                js7.push_str(", NO SERVICES in the active pod");
            }
            println!(
                "[{:>4}/{}] {:>6.0} s  {:<18} {:<8} {} → {} in {} ms (bound {} ms){js7}",
                index + 1,
                self.config.faults,
                record.at_s,
                kind.name(),
                record.target.as_deref().unwrap_or("-"),
                record.active_before,
                record.active_after,
                record.recovery_ms,
                record.bound_ms
            );
            self.log.push(record);
        }
        settle(stack, &self.canary)
            .await
            .context("the cluster did not settle")?;
        Ok(())
    }

    async fn inject(
        &mut self,
        stack: &mut Stack,
        kind: FaultKind,
        active: String,
    ) -> Result<FaultRecord> {
        let ttl = self.config.ttl;
        let namespace = stack.options.namespace.clone();
        let at_s = self.started.elapsed().as_secs_f64();
        let start = Instant::now();
        // The pod (name and uid) that must not be the one active endpoint
        // afterwards; a new pod of that name (after a deletion) may be.
        let victim_pod = Victim {
            name: active.clone(),
            uid: stack.pods().get(&active).await?.metadata.uid,
        };
        let mut victim: Option<Victim> = None;
        let mut target: Option<String> = Some(active.clone());
        match kind {
            FaultKind::KillSidecar => {
                let container = pod_names::SIDECAR_CONTAINER;
                stack.kubelet.block_starts(&namespace, &active, container);
                let sidecar = stack.sidecar(&active).context("no sidecar process")?;
                sidecar.signal(nix::sys::signal::Signal::SIGKILL)?;
                sidecar
                    .wait_exit(Duration::from_secs(10))
                    .await
                    .context("the killed sidecar did not exit")?;
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await;
                stack.kubelet.allow_starts(&namespace, &active, container);
                return self.record(kind, target, active, recovered?, at_s, Duration::ZERO);
            }
            FaultKind::KillActive => {
                let containers = [pod_names::SIDECAR_CONTAINER, pod_names::COCKPIT_CONTAINER];
                for container in containers {
                    stack.kubelet.block_starts(&namespace, &active, container);
                }
                let processes: Vec<_> = [stack.sidecar(&active), stack.cockpit(&active)]
                    .into_iter()
                    .flatten()
                    .collect();
                for process in &processes {
                    process.signal(nix::sys::signal::Signal::SIGKILL)?;
                }
                for process in &processes {
                    process
                        .wait_exit(Duration::from_secs(10))
                        .await
                        .context("a killed process did not exit")?;
                }
                match self.config.workload {
                    Workload::Generic => note_killed(&stack.periods_dir, &active)?,
                    Workload::Js7 => joc_ha_tests::agreement::note_joc_killed(stack, &active)?,
                }
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await;
                for container in containers {
                    stack.kubelet.allow_starts(&namespace, &active, container);
                }
                return self.record(kind, target, active, recovered?, at_s, Duration::ZERO);
            }
            FaultKind::FreezeActive => {
                let sidecar = stack.sidecar(&active).context("no sidecar process")?;
                self.freezes += 1;
                let cockpit = if self.freezes.is_multiple_of(2) {
                    stack.cockpit(&active)
                } else {
                    None
                };
                let hold = ttl + Duration::from_millis(self.rng.random_range(500..2500));
                sidecar.freeze()?;
                if let Some(cockpit) = &cockpit {
                    cockpit.freeze()?;
                }
                let frozen_from = now_ns();
                tokio::time::sleep(hold).await;
                sidecar.thaw()?;
                if let Some(cockpit) = &cockpit {
                    cockpit.thaw()?;
                    self.frozen.push(Frozen {
                        member: active.clone(),
                        from_ns: frozen_from,
                        to_ns: now_ns(),
                    });
                }
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await?;
                return self.record(kind, target, active, recovered, at_s, hold);
            }
            FaultKind::CutActive => {
                let proxy = stack
                    .proxies
                    .get(&active)
                    .context("no database proxy for the active member")?;
                let hold = ttl + Duration::from_millis(self.rng.random_range(1000..3000));
                proxy.cut();
                tokio::time::sleep(hold).await;
                proxy.restore();
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await?;
                return self.record(kind, target, active, recovered, at_s, hold);
            }
            FaultKind::DatabaseDown => {
                target = None;
                stack.db_server()?.stop().await?;
                // The fault is the outage itself: a fixed time, by design.
                tokio::time::sleep(self.config.outage).await;
                stack.db_server()?.start().await?;
            }
            FaultKind::DatabaseRestart => {
                target = None;
                stack.db_server()?.stop().await?;
                stack.db_server()?.start().await?;
            }
            FaultKind::ApiServerRestart => {
                target = None;
                stack.plane.restart_apiserver().await?;
                let held = start.elapsed();
                let back = Instant::now();
                let lag = self.canary.wait_prompt(stack).await?;
                let recovered = self.recovered(stack, kind, None, back).await?;
                let mut record = self.record(kind, target, active, recovered, at_s, held)?;
                record.control_plane_lag_ms = lag.as_millis() as u64;
                record.bound_ms += record.control_plane_lag_ms;
                return Ok(record);
            }
            FaultKind::DeleteActive => {
                stack.delete_pod(&active).await?;
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await?;
                return self.record(kind, target, active, recovered, at_s, Duration::ZERO);
            }
            FaultKind::SwitchoverStorm => {
                target = None;
                let count = self.rng.random_range(5..=15);
                let mut choices = stack.member_names();
                choices.push("any".to_owned());
                let mut next = tokio::time::Instant::now();
                for _ in 0..count {
                    tokio::time::sleep_until(next).await;
                    next += Duration::from_millis(200);
                    let to = choices[self.rng.random_range(0..choices.len())].clone();
                    stack.annotate_switchover(&to).await?;
                }
                // Recovery counts from the last annotation, once the holder
                // has taken it (and done the switch-over it asked for).
                let asked = Instant::now();
                wait_for(
                    "the last switch-over request to be taken",
                    self.config.bound(kind) + GIVE_UP,
                    Duration::from_millis(50),
                    || async {
                        let cluster = stack.cluster().await.ok()?;
                        (!cluster
                            .metadata
                            .annotations
                            .unwrap_or_default()
                            .contains_key(joc_ha_crds::names::ANNOTATION_SWITCHOVER_TO))
                        .then_some(())
                    },
                )
                .await?;
                let recovered = self.recovered(stack, kind, None, asked).await?;
                return self.record(kind, target, active, recovered, at_s, start.elapsed());
            }
            FaultKind::Switchover => {
                let to = self.random_standby(stack, &active)?;
                target = Some(to.clone());
                stack.annotate_switchover(&to).await?;
                let asked = Instant::now();
                self.switchover_taken(stack, kind).await?;
                // Until the Service left the old active pod: right after the
                // annotation was taken it may still be the one endpoint.
                victim = Some(victim_pod.clone());
                let recovered = self.recovered(stack, kind, victim.as_ref(), asked).await?;
                return self.record(kind, target, active, recovered, at_s, start.elapsed());
            }
            FaultKind::FreezeInStart => {
                let to = self.random_standby(stack, &active)?;
                target = Some(to.clone());
                let cockpit = stack.cockpit(&to).context("no JOC process")?;
                // Poll JOC_CLUSTER as fast as a look takes: the target's
                // services start about 1 s after MEMBER_ID names it. A
                // request the holder rejects (the target's readiness still
                // flickering after a database restart, as the README says)
                // is asked again once every member is Ready: the fault is
                // the freeze, not the request.
                let url = stack.database_url.clone();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let before = last_switchover(stack).await;
                    stack.annotate_switchover(&to).await?;
                    let moved = wait_for(
                        &format!("JOC_CLUSTER.MEMBER_ID to name {to}, or the request rejected"),
                        self.config.bound(kind) + GIVE_UP,
                        Duration::from_millis(5),
                        || async {
                            let row = joc_ha_tests::joc::cluster_row(&url).await.ok().flatten();
                            if row.is_some_and(|row| host_of(&row.member_id) == to) {
                                return Some(true);
                            }
                            let last = last_switchover(stack).await;
                            let rejected = last != before
                                && last.as_ref().is_some_and(|l| {
                                    l.to == to
                                        && l.result
                                            == joc_ha_crds::v1alpha1::SwitchoverResult::Rejected
                                });
                            rejected.then_some(false)
                        },
                    )
                    .await?;
                    if moved {
                        break;
                    }
                    if attempts >= 3 {
                        bail!("the switch-over to {to} was rejected {attempts} times");
                    }
                    stack.wait_members_ready(self.config.bound(kind)).await?;
                }
                let moved_ns = now_ns();
                // The target sees the move at its next poll (within 1 s) and
                // then sleeps 1 s before its services start (fact 11): a
                // random point of the first 1.2 s lands before its poll or
                // inside that start, where a thaw resumes it (fact 20).
                let delay = Duration::from_millis(self.rng.random_range(0..1200));
                tokio::time::sleep(delay).await;
                cockpit.freeze()?;
                let frozen_from = now_ns();
                // The stand-in cannot write while frozen: a start recorded
                // by now came before the freeze.
                let services = services_report(&stack.periods_dir, &self.frozen, frozen_from)?;
                let in_start = !services.running_at(&to, frozen_from);
                let hold = JOC_EXCEEDED + Duration::from_millis(self.rng.random_range(2000..4000));
                let froze = Instant::now();
                tokio::time::sleep(hold).await;
                cockpit.thaw()?;
                self.frozen.push(Frozen {
                    member: to.clone(),
                    from_ns: frozen_from,
                    to_ns: now_ns(),
                });
                let recovered = self.recovered(stack, kind, None, froze).await?;
                let mut record = self.record(kind, target, active, recovered, at_s, hold)?;
                record.froze_in_start = Some(in_start);
                record.froze_after_move_ms = Some(
                    Duration::from_nanos((frozen_from - moved_ns).max(0) as u64).as_millis() as u64,
                );
                return Ok(record);
            }
            FaultKind::ClockSkew => {
                let members = stack.member_names();
                let member = members[self.rng.random_range(0..members.len())].clone();
                let skew = !self.skewed.contains(&member);
                let env = if skew {
                    clock_an_hour_ahead()?
                } else {
                    Vec::new()
                };
                stack
                    .overrides
                    .update(&member, |o| o.sidecar_env = env.clone());
                if skew {
                    self.skewed.push(member.clone());
                } else {
                    self.skewed.retain(|m| *m != member);
                }
                let sidecar = stack.sidecar(&member).context("no sidecar process")?;
                // SIGTERM: the sidecar steps down and exits; the kubelet
                // starts it again with the new clock.
                sidecar.signal(nix::sys::signal::Signal::SIGTERM)?;
                sidecar
                    .wait_exit(ttl * 4)
                    .await
                    .context("the sidecar did not exit on SIGTERM")?;
                // The SIGTERMed sidecar has stepped down and exited: whoever
                // is labeled active now (even its own restarted process, when
                // no standby was ready) holds the lease.
                target = Some(format!("{member}{}", if skew { "+1h" } else { "±0" }));
                let recovered = self.recovered(stack, kind, victim.as_ref(), start).await?;
                check_clock(stack, &member, skew).await?;
                return self.record(kind, target, active, recovered, at_s, Duration::ZERO);
            }
        }
        let held = start.elapsed();
        let recovered = self
            .recovered(stack, kind, victim.as_ref(), Instant::now())
            .await?;
        self.record(kind, target, active, recovered, at_s, held)
    }

    fn random_standby(&mut self, stack: &Stack, active: &str) -> Result<String> {
        let standbys: Vec<String> = stack
            .member_names()
            .into_iter()
            .filter(|m| m != active)
            .collect();
        if standbys.is_empty() {
            bail!("no standby member to switch over to");
        }
        Ok(standbys[self.rng.random_range(0..standbys.len())].clone())
    }

    /// Waits until the holder took the switch-over annotation.
    async fn switchover_taken(&self, stack: &Stack, kind: FaultKind) -> Result<()> {
        wait_for(
            "the switch-over request to be taken",
            self.config.bound(kind) + GIVE_UP,
            Duration::from_millis(50),
            || async {
                let cluster = stack.cluster().await.ok()?;
                (!cluster
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key(joc_ha_crds::names::ANNOTATION_SWITCHOVER_TO))
                .then_some(())
            },
        )
        .await
    }

    /// js7, after a fault's recovery: services run in the active pod's JOC
    /// (within the bound), the longest time with none since the fault's
    /// start, and no switch request older than two polls left one poll on.
    async fn js7_checks(
        &self,
        stack: &Stack,
        record: &mut FaultRecord,
        from_ns: i64,
    ) -> Result<()> {
        let frozen = &self.frozen;
        // In the pod the Service routes to when they run: that may no
        // longer be the pod active right after the recovery (a holder whose
        // JOC was fenced while the database was gone hands on once it is
        // back).
        let running = wait_for(
            "JOC's services to run in the one pod the Service routes to",
            self.config.bound(record.kind),
            Duration::from_millis(50),
            || async {
                let routed: Vec<String> = stack.endpoints.current().into_iter().collect();
                let [active] = routed.as_slice() else {
                    return None;
                };
                let now = now_ns();
                let report = services_report(&stack.periods_dir, frozen, now).ok()?;
                report.running_at(active, now).then_some(())
            },
        )
        .await;
        record.services_missing = running.is_err();
        let now = now_ns();
        let report = services_report(&stack.periods_dir, frozen, now)?;
        record.no_services_ms = Some(report.longest_gap_within(from_ns, now).as_millis() as u64);
        // The holder clears a request older than two polls at its next
        // look (sidecar js7::stale_switch_request): one more poll, plus
        // one for the look itself.
        let url = stack.database_url.clone();
        let two_polls = (JOC_POLL * 2).as_secs() as i64;
        let last = std::sync::Mutex::new(String::new());
        let cleared = wait_for(
            "no switch request older than two polls",
            JOC_POLL * 3,
            Duration::from_millis(100),
            || async {
                let row = joc_ha_tests::joc::cluster_row(&url).await.ok()?;
                let stale = row.as_ref().and_then(|r| {
                    let age = r.db_now - r.switch_heart_beat?;
                    (r.switch_member_id.is_some() && age > two_polls).then(|| {
                        format!(
                            "SWITCH_MEMBER_ID {:?}, {age} s old",
                            r.switch_member_id.as_deref().unwrap_or_default()
                        )
                    })
                });
                match stale {
                    Some(text) => {
                        if let Ok(mut last) = last.lock() {
                            *last = text;
                        }
                        None
                    }
                    None => Some(()),
                }
            },
        )
        .await;
        if cleared.is_err() {
            record.stale_switch = Some(last.lock().map(|l| l.clone()).unwrap_or_default());
        }
        Ok(())
    }

    /// Waits for one active endpoint (not the `victim` pod) that is the one
    /// pod labeled active; returns it and when it became the Service's only
    /// endpoint, measured from `from` (zero if it already was).
    async fn recovered(
        &self,
        stack: &Stack,
        kind: FaultKind,
        victim: Option<&Victim>,
        from: Instant,
    ) -> Result<(String, Duration)> {
        let seen = std::sync::Mutex::new(String::new());
        let result = wait_for(
            "one active endpoint again",
            self.config.bound(kind) + GIVE_UP,
            Duration::from_millis(20),
            || async {
                let timeline = stack.endpoints.timeline();
                let (since, pods) = timeline.last()?;
                let labeled = stack.labeled_active().await.ok();
                if let Ok(mut seen) = seen.lock() {
                    *seen = format!("endpoints {pods:?}, labeled active {labeled:?}");
                }
                let [pod] = pods.iter().collect::<Vec<_>>()[..] else {
                    return None;
                };
                if labeled? != [pod.clone()] {
                    return None;
                }
                if let Some(victim) = victim
                    && *pod == victim.name
                {
                    let uid = stack.pods().get(pod).await.ok()?.metadata.uid;
                    if uid == victim.uid {
                        return None;
                    }
                }
                Some((pod.clone(), since.saturating_duration_since(from)))
            },
        )
        .await;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        result.with_context(|| format!("last seen: {seen}"))
    }

    fn record(
        &self,
        kind: FaultKind,
        target: Option<String>,
        active_before: String,
        (active_after, recovery): (String, Duration),
        at_s: f64,
        held: Duration,
    ) -> Result<FaultRecord> {
        Ok(FaultRecord {
            kind,
            target,
            active_before,
            active_after,
            at_s,
            held_ms: held.as_millis() as u64,
            recovery_ms: recovery.as_millis() as u64,
            bound_ms: self.config.bound(kind).as_millis() as u64,
            control_plane_lag_ms: 0,
            no_services_ms: None,
            services_missing: false,
            stale_switch: None,
            froze_in_start: None,
            froze_after_move_ms: None,
            started_ns: 0,
            services_overlaps: 0,
        })
    }
}

/// How long [`settle`] waits for every member: a fenced JOC's restart (at
/// once when its container's processes ended with its JVM, else the
/// liveness probe's 60 s) and start, with room for a loaded machine.
const SETTLE_BOUND: Duration = Duration::from_secs(180);

/// Every member Ready and its sidecar connected to the database, the
/// EndpointSlice controller following changes (the canary), one active
/// endpoint, one pod labeled active: the state each fault starts from.
/// Returns the active member.
async fn settle(stack: &Stack, canary: &Canary) -> Result<String> {
    // One condition, so that a member cannot drop out between two checks
    // (a fenced JOC's container restarts while the rest is checked).
    // Bounded by a fenced member's way back: its container restarts (at
    // worst by the liveness probe after 6 × 10 s), then JOC starts.
    let pods = stack.pods();
    let members = stack.member_names();
    let mut urls = Vec::new();
    for member in &members {
        urls.push(format!(
            "{}/readyz",
            stack.sidecar_url(member).context("no sidecar port")?
        ));
    }
    wait_for(
        "every member Ready and its sidecar ready (connected to the database)",
        SETTLE_BOUND,
        Duration::from_millis(100),
        || async {
            for member in &members {
                let pod = pods.get(member).await.ok()?;
                if !joc_ha_tests::stack::is_ready(&pod) {
                    return None;
                }
            }
            for url in &urls {
                let status = joc_ha_tests::wait::http_get_status(url, Duration::from_secs(2))
                    .await
                    .ok()?;
                if status != 200 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    canary.wait_prompt(stack).await?;
    wait_for(
        "one active endpoint, labeled active",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let current = stack.endpoints.current();
            let [pod] = current.iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            (stack.labeled_active().await.ok()? == [pod.clone()]).then(|| pod.clone())
        },
    )
    .await
}

/// A pod and a Service of their own, in namespace `chaos-canary`: toggling
/// the pod's label and seeing the Service's EndpointSlice follow proves the
/// EndpointSlice controller is watching again (after an API server restart
/// its watches back off for up to 30 s, as client-go's do).
pub struct Canary {
    on: std::sync::atomic::AtomicBool,
}

const CANARY_NAMESPACE: &str = "chaos-canary";
/// A probe this fast means the EndpointSlice controller is following.
const CANARY_PROMPT: Duration = Duration::from_secs(2);
/// How long the control plane may take to follow promptly again.
const CANARY_PATIENCE: Duration = Duration::from_secs(300);

impl Canary {
    async fn create(stack: &Stack) -> Result<Canary> {
        use k8s_openapi::api::core::v1::{Pod, Service};
        use kube::api::{Api, PostParams};
        stack.plane.create_namespace(CANARY_NAMESPACE).await?;
        let services: Api<Service> = Api::namespaced(stack.client(), CANARY_NAMESPACE);
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "canary"},
            "spec": {"selector": {"canary": "on"}, "ports": [{"port": 80}]},
        }))?;
        services.create(&PostParams::default(), &service).await?;
        let pods: Api<Pod> = Api::namespaced(stack.client(), CANARY_NAMESPACE);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "canary", "labels": {"canary": "off"}},
            "spec": {"containers": [{"name": "canary", "image": "canary"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        Ok(Canary {
            on: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Probes until the EndpointSlice controller follows a change promptly
    /// (within [`CANARY_PROMPT`]); returns how long that took. One slow
    /// probe is not enough: after an API server restart the controller's
    /// informers may still be stale, and it retries a Service with growing
    /// back-off (a kill 16 s after such a restart once took 18 s to reach
    /// the Service although the new holder labeled its pod in 2.3 s).
    async fn wait_prompt(&self, stack: &Stack) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let took = self.probe(stack).await?;
            if took <= CANARY_PROMPT {
                return Ok(started.elapsed());
            }
            if started.elapsed() > CANARY_PATIENCE {
                bail!(
                    "the EndpointSlice controller did not follow changes within {} s for {} s",
                    CANARY_PROMPT.as_secs(),
                    CANARY_PATIENCE.as_secs()
                );
            }
        }
    }

    /// Flips the pod in or out of the Service and waits for the slice to
    /// follow; says so when that took long. Returns how long it took.
    async fn probe(&self, stack: &Stack) -> Result<Duration> {
        use k8s_openapi::api::core::v1::Pod;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use kube::api::{Api, ListParams, Patch, PatchParams};
        let on = !self.on.load(Ordering::Relaxed);
        let pods: Api<Pod> = Api::namespaced(stack.client(), CANARY_NAMESPACE);
        let value = if on { "on" } else { "off" };
        pods.patch(
            "canary",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"canary": value}}})),
        )
        .await
        .context("relabel the canary pod")?;
        let slices: Api<EndpointSlice> = Api::namespaced(stack.client(), CANARY_NAMESPACE);
        let asked = Instant::now();
        wait_for(
            "the EndpointSlice controller to follow the canary",
            Duration::from_secs(120),
            Duration::from_millis(50),
            || async {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=canary"))
                    .await
                    .ok()?;
                let routed = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter().flatten())
                    .any(|e| {
                        e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some("canary")
                    });
                (routed == on).then_some(())
            },
        )
        .await?;
        self.on.store(on, Ordering::Relaxed);
        if asked.elapsed() > Duration::from_secs(2) {
            println!(
                "         (the EndpointSlice controller caught up after {:.1} s)",
                asked.elapsed().as_secs_f64()
            );
        }
        Ok(asked.elapsed())
    }
}

/// Copies the logs (`*.log`) and records (`*.jsonl`) below `from`,
/// keeping the folder layout (and leaving tokens and keys behind).
fn copy_logs(from: &Path, to: &Path) -> Result<()> {
    let mut pending = vec![from.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "log" || e == "jsonl")
                && let Ok(relative) = path.strip_prefix(from)
            {
                let target = to.join(relative);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::copy(&path, &target)?;
            }
        }
    }
    Ok(())
}

/// The restarted sidecar's wall clock is an hour ahead (or not): its role
/// report carries the time it was made. `/role` answers only inside the
/// pod (its loopback listener); the harness reads it as the cockpit would.
async fn check_clock(stack: &Stack, member: &str, skewed: bool) -> Result<()> {
    let url = format!(
        "{}/role",
        stack
            .sidecar_local_url(member)
            .context("no sidecar loopback port")?
    );
    let since = wait_for(
        "the restarted sidecar's role report",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let (status, body) = joc_ha_tests::wait::http_get(&url, Duration::from_secs(2))
                .await
                .ok()?;
            if status != 200 {
                return None;
            }
            let report: joc_ha_sidecar::role::RoleReport = serde_json::from_str(&body).ok()?;
            report.since.parse::<jiff::Timestamp>().ok()
        },
    )
    .await?;
    let ahead_s = (since.as_second() - jiff::Timestamp::now().as_second()) as f64;
    let expected = if skewed { 3600.0 } else { 0.0 };
    if (ahead_s - expected).abs() > 300.0 {
        bail!("{member}'s sidecar clock is {ahead_s:.0} s ahead, expected {expected:.0} s");
    }
    Ok(())
}

/// Marks in a stand-in's period file that the harness killed it (it
/// cannot say so itself).
fn note_killed(dir: &Path, member: &str) -> Result<()> {
    use std::io::Write as _;
    let line = json!({"member": member, "event": "killed", "term": 0, "mono_ns": monotonic_ns()});
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{member}.jsonl")))?;
    file.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

/// The stand-ins' active periods from their files, and records that make
/// no sense. A period ends at the stand-in's `standby` record, at the
/// harness's `killed` record, or at the end of observation.
pub fn standin_periods(dir: &Path, observed_until_ns: i64) -> Result<(Vec<Period>, Vec<String>)> {
    let mut periods = Vec::new();
    let mut anomalies = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        // `<pod>.joc.jsonl` are JOC stand-ins' service periods (their own
        // format, read by agreement::services_report), not cockpit periods.
        .filter(|p| !p.to_string_lossy().ends_with(".joc.jsonl"))
        .collect();
    files.sort();
    for file in files {
        let member = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut records = read_records(&file)?;
        records.sort_by_key(|r| r.mono_ns);
        let mut open: Option<(i64, i64)> = None;
        for record in records {
            let term = record.term.unwrap_or(0);
            match record.event.as_str() {
                "active" => {
                    if let Some((held, start)) = open.take() {
                        anomalies.push(format!(
                            "{member}: active term {term} at {} while term {held} was still active",
                            record.mono_ns
                        ));
                        periods.push(period(&member, held, start, record.mono_ns));
                    }
                    open = Some((term, record.mono_ns));
                }
                "standby" | "killed" | "started" => {
                    if let Some((held, start)) = open.take() {
                        if record.event == "started" {
                            anomalies.push(format!(
                                "{member}: restarted at {} while term {held} was active, with no record of its end",
                                record.mono_ns
                            ));
                        }
                        periods.push(period(&member, held, start, record.mono_ns));
                    }
                }
                other => anomalies.push(format!("{member}: unknown record {other:?}")),
            }
        }
        if let Some((held, start)) = open {
            periods.push(period(&member, held, start, observed_until_ns));
        }
    }
    Ok((periods, anomalies))
}

fn period(member: &str, term: i64, start_ns: i64, end_ns: i64) -> Period {
    Period {
        instance: member.to_owned(),
        term,
        start_ns,
        end_ns: end_ns.max(start_ns),
    }
}

/// The simulated Controller: appends an event every 50 ms, directly to
/// the database (it is no member), retrying the same id through outages.
struct Controller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    fn start(url: String) -> Controller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let Ok(dialect) = Dialect::of_url(&url) else {
                return;
            };
            let mut conn = None;
            let mut next_id: i64 = 1;
            while !flag.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match history::connect(&url).await {
                        Ok(mut fresh) => {
                            // An insert whose answer was lost may have landed.
                            if let Ok(max) = max_event(&mut fresh).await {
                                next_id = next_id.max(max + 1);
                            }
                            conn = Some(fresh);
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                if let Some(c) = conn.as_mut() {
                    let append = history::append_event(c, dialect, next_id);
                    match tokio::time::timeout(Duration::from_secs(5), append).await {
                        Ok(Ok(())) => next_id += 1,
                        _ => conn = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Controller { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn max_event(conn: &mut sqlx::AnyConnection) -> Result<i64> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM standin_events")
        .fetch_one(conn)
        .await?;
    Ok(max.unwrap_or(0))
}

/// Waits until the history's cursor has reached the last event.
async fn drain(stack: &Stack, timeout: Duration) -> Result<()> {
    let url = stack.database_url.clone();
    wait_for(
        "the history to catch up with the last event",
        timeout,
        Duration::from_millis(200),
        || {
            let url = url.clone();
            async move {
                let mut conn = history::connect(&url).await.ok()?;
                let last = max_event(&mut conn).await.ok()?;
                let cursor = history::cursor(&mut conn).await.ok()?;
                (cursor >= last).then_some(())
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, member: &str, lines: &[(&str, i64, i64)]) -> Result<()> {
        let text: String = lines
            .iter()
            .map(|(event, term, at)| {
                format!(
                    "{}\n",
                    json!({"member": member, "event": event, "term": term, "mono_ns": at})
                )
            })
            .collect();
        std::fs::write(dir.join(format!("{member}.jsonl")), text)?;
        Ok(())
    }

    #[test]
    fn periods_end_at_standby_kill_or_observation() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write(
            dir.path(),
            "joc-0",
            &[
                ("started", 0, 0),
                ("active", 1, 10),
                ("standby", 1, 20),
                ("active", 3, 50),
                ("killed", 0, 60),
                ("started", 0, 70),
            ],
        )?;
        write(
            dir.path(),
            "joc-1",
            &[("started", 0, 1), ("active", 2, 25), ("standby", 2, 40)],
        )?;
        write(dir.path(), "joc-2", &[("started", 0, 2), ("active", 4, 65)])?;
        let (periods, anomalies) = standin_periods(dir.path(), 100)?;
        assert!(anomalies.is_empty(), "{anomalies:?}");
        assert_eq!(periods.len(), 4);
        assert!(violations(&periods).is_empty());
        let last = periods.iter().find(|p| p.term == 4).expect("term 4");
        assert_eq!(last.end_ns, 100);
        Ok(())
    }

    #[test]
    fn overlaps_and_unended_periods_are_found() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write(
            dir.path(),
            "joc-0",
            &[("active", 1, 10), ("started", 0, 30), ("active", 3, 40)],
        )?;
        write(
            dir.path(),
            "joc-1",
            &[("active", 2, 20), ("standby", 2, 35)],
        )?;
        let (periods, anomalies) = standin_periods(dir.path(), 100)?;
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        let found = violations(&periods);
        assert!(
            found.iter().any(|v| matches!(v, Violation::Overlap { .. })),
            "{found:?}"
        );
        Ok(())
    }

    #[test]
    fn bounds_follow_the_lease() {
        let ttl = Duration::from_secs(5);
        assert_eq!(FaultKind::KillActive.bound(ttl), Duration::from_secs(10));
        assert_eq!(FaultKind::CutActive.bound(ttl), Duration::from_secs(15));
        assert_eq!(FaultKind::DatabaseDown.bound(ttl), Duration::from_secs(15));
        for kind in FaultKind::ALL.into_iter().chain(FaultKind::EXTRA) {
            assert_eq!(FaultKind::from_name(kind.name()), Some(kind));
        }
    }
}
