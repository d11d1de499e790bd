//! js7 mode on the harness: whether the lease holder, the `active` label,
//! the active Service's endpoint and JOC's own active member
//! (`JOC_CLUSTER.MEMBER_ID`) name the same pod, and the faults that part
//! them. Used by the js7 end-to-end tests and the `bench-js7` benchmark.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{AssertSqlSafe, Row};

use crate::stack::Stack;

/// What each party says is active, at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub lease_holder: Option<String>,
    /// The lease term (fencing token): +1 on every change of holder.
    pub term: i64,
    pub labeled: Vec<String>,
    pub endpoints: Vec<String>,
    /// The pod (host name) of JOC's active member.
    pub joc: Option<String>,
}

impl Parties {
    /// The pod all four agree on.
    pub fn agreed(&self) -> Option<&str> {
        let holder = self.lease_holder.as_deref()?;
        (self.labeled == [holder]
            && self.endpoints == [holder]
            && self.joc.as_deref() == Some(holder))
        .then_some(holder)
    }
}

/// Agreement on one pod under one lease term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub pod: String,
    pub term: i64,
    /// How long the wait took.
    pub took: Duration,
}

/// The lease row's holder and term of the stack's cluster.
pub async fn lease_holder(stack: &Stack) -> Result<(Option<String>, i64)> {
    let mut conn = crate::joc::connect(&stack.database_url).await?;
    let cluster_id = format!("{}/{}", stack.options.namespace, stack.options.name);
    let placeholder = if stack.database_url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT holder, term FROM joc_ha_lease WHERE cluster_id = {placeholder}"
    )))
    .bind(cluster_id)
    .fetch_optional(&mut conn)
    .await
    .context("reading the lease row")?;
    Ok(match row {
        Some(row) => (row.try_get::<Option<String>, _>(0)?, row.try_get(1)?),
        None => (None, 0),
    })
}

/// Members registered in the lease (`joc_ha_member`).
pub async fn lease_members(stack: &Stack) -> Result<Vec<String>> {
    let mut conn = crate::joc::connect(&stack.database_url).await?;
    let rows = sqlx::query("SELECT member FROM joc_ha_member")
        .fetch_all(&mut conn)
        .await
        .context("reading the lease members")?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}

/// One look at every party.
pub async fn parties(stack: &Stack) -> Result<Parties> {
    let joc = crate::joc::joc_active_member(&stack.database_url)
        .await?
        .map(|id| host_of(&id).to_owned());
    let (lease_holder, term) = lease_holder(stack).await?;
    Ok(Parties {
        lease_holder,
        term,
        labeled: stack.labeled_active().await?,
        endpoints: stack.endpoints.current().into_iter().collect(),
        joc,
    })
}

/// The host name part of a JOC member id (`<host>:<sha256>`).
pub use joc_ha_sidecar::js7::hostname_of as host_of;

/// Waits until all parties agree on one pod under a lease term above
/// `after_term` (every change of holder, even back to the same pod after a
/// crash, raises the term). The error shows the last look.
pub async fn wait_agreement(
    stack: &Stack,
    after_term: Option<i64>,
    timeout: Duration,
) -> Result<Agreement> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        match parties(stack).await {
            Ok(look) => {
                if let Some(pod) = look.agreed()
                    && after_term.is_none_or(|t| look.term > t)
                {
                    return Ok(Agreement {
                        pod: pod.to_owned(),
                        term: look.term,
                        took: started.elapsed(),
                    });
                }
                last = Some(look);
            }
            Err(error) => tracing::debug!(%error, "look at the parties failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "no agreement under a lease term above {after_term:?} within {timeout:?}; last look: {last:?}"
    )
}

/// A failed pod: its sidecar and JOC processes are killed (the kubelet
/// restarts them, as it would restart crashed containers).
pub async fn kill_pod_processes(stack: &Stack, pod: &str) -> Result<()> {
    let sidecar = stack.sidecar(pod).context("sidecar process")?;
    let joc = stack.cockpit(pod).context("JOC process")?;
    let (a, b) = tokio::join!(sidecar.kill(), joc.kill());
    a?;
    b?;
    note_joc_killed(stack, pod)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Service periods: who ran JOC's active-member services when
// ---------------------------------------------------------------------------

/// One JOC instance's services running, by the stand-in's periods file
/// (CLOCK_MONOTONIC ns), not by `MEMBER_ID` (docs/joc-facts.md fact 20, 21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePeriod {
    /// The pod (host name of the member id).
    pub member: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// A time a stand-in was frozen (SIGSTOP → SIGCONT) by the test: its
/// services did not run then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub member: String,
    pub from_ns: i64,
    pub to_ns: i64,
}

/// From a fault's injection until the cluster has settled after it (ns,
/// CLOCK_MONOTONIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    pub from_ns: i64,
    pub to_ns: i64,
}

/// Two stand-ins running services at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub a: String,
    pub b: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Overlap {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos((self.end_ns - self.start_ns).max(0) as u64)
    }
}

/// What the periods files say about a whole test.
#[derive(Debug, Clone, Default)]
pub struct ServicesReport {
    pub periods: Vec<ServicePeriod>,
    pub overlaps: Vec<Overlap>,
    /// The longest time, after the first start, with no stand-in running services.
    pub longest_gap: Duration,
    /// Records that make no sense (a start while running, unknown events).
    pub anomalies: Vec<String>,
}

impl ServicesReport {
    /// The overlaps that begin outside every fault window. Inside one, JOC
    /// itself lets two members run services for up to a poll: a thawed JOC
    /// finishes a start or runs until its next poll (docs/joc-facts.md fact 20), and two
    /// standbys that read the exceeded heartbeat at the same moment both
    /// take over and both start (`sos-joc/sos-joc-db/.../joc/DBItemJocCluster.java`
    /// has no @Version, so both UPDATEs succeed; the loser stops at its next
    /// poll). Fencing such windows is the product's business.
    pub fn overlaps_outside(&self, windows: &[FaultWindow]) -> Vec<Overlap> {
        self.overlaps
            .iter()
            .filter(|o| {
                !windows
                    .iter()
                    .any(|w| o.start_ns >= w.from_ns && o.start_ns <= w.to_ns)
            })
            .cloned()
            .collect()
    }

    /// The longest time within `from_ns..to_ns` with no stand-in running
    /// services (docs/joc-facts.md fact 21: the label can name a member
    /// whose JOC has not started them).
    pub fn longest_gap_within(&self, from_ns: i64, to_ns: i64) -> Duration {
        let mut covered: Vec<(i64, i64)> = self
            .periods
            .iter()
            .map(|p| (p.start_ns.max(from_ns), p.end_ns.min(to_ns)))
            .filter(|(s, e)| e > s)
            .collect();
        covered.sort_unstable();
        let mut reached = from_ns;
        let mut longest = 0_i64;
        for (start, end) in covered {
            longest = longest.max(start - reached);
            reached = reached.max(end);
        }
        longest = longest.max(to_ns - reached);
        Duration::from_nanos(longest.max(0) as u64)
    }

    /// Whether `member`'s stand-in runs services at `ns`.
    pub fn running_at(&self, member: &str, ns: i64) -> bool {
        self.periods
            .iter()
            .any(|p| p.member == member && p.start_ns <= ns && ns <= p.end_ns)
    }

    pub fn summary(&self) -> String {
        let longest = self
            .overlaps
            .iter()
            .map(Overlap::duration)
            .max()
            .unwrap_or_default();
        format!(
            "{} service periods, {} overlaps (longest {longest:?}), longest time with no services {:?}, {} anomalies",
            self.periods.len(),
            self.overlaps.len(),
            self.longest_gap,
            self.anomalies.len()
        )
    }
}

#[derive(serde::Deserialize)]
struct ServiceRecord {
    member: String,
    event: String,
    mono_ns: i64,
    #[serde(default)]
    pid: Option<u32>,
}

/// Reads every `*.joc.jsonl` in `dir` (the JOC stand-ins' periods files). A
/// period is a `start` up to the same process's `stop`, a `killed` record
/// (written by the harness or by the container part when the JVM dies), a
/// record of another process (the old one is gone: ends there at the latest)
/// or `until_ns`. Frozen times are cut out of the periods.
pub fn services_report(dir: &Path, frozen: &[Frozen], until_ns: i64) -> Result<ServicesReport> {
    let mut report = ServicesReport::default();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".joc.jsonl"))
        .collect();
    files.sort();
    let mut raw = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let mut records: Vec<ServiceRecord> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(r) => records.push(r),
                Err(e) => report
                    .anomalies
                    .push(format!("{}: unreadable line {line:?}: {e}", file.display())),
            }
        }
        records.sort_by_key(|r| r.mono_ns);
        let mut open: Option<(String, i64, Option<u32>)> = None;
        for r in records {
            let member = host_of(&r.member).to_owned();
            match r.event.as_str() {
                "start" => {
                    if let Some((m, start, pid)) = open.take() {
                        if pid == r.pid {
                            report
                                .anomalies
                                .push(format!("{m}: start at {} while running", r.mono_ns));
                        }
                        raw.push(ServicePeriod {
                            member: m,
                            start_ns: start,
                            end_ns: r.mono_ns,
                        });
                    }
                    open = Some((member, r.mono_ns, r.pid));
                }
                "stop" | "killed" => {
                    if let Some((m, start, _)) = open.take() {
                        raw.push(ServicePeriod {
                            member: m,
                            start_ns: start,
                            end_ns: r.mono_ns,
                        });
                    }
                }
                other => report
                    .anomalies
                    .push(format!("{member}: unknown record {other:?}")),
            }
        }
        if let Some((m, start, _)) = open {
            raw.push(ServicePeriod {
                member: m,
                start_ns: start,
                end_ns: until_ns.max(start),
            });
        }
    }
    // Cut the frozen times out.
    for period in raw {
        let mut pieces = vec![(period.start_ns, period.end_ns)];
        for f in frozen.iter().filter(|f| f.member == period.member) {
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| {
                    let mut out = Vec::new();
                    if f.to_ns <= s || f.from_ns >= e {
                        out.push((s, e));
                    } else {
                        if f.from_ns > s {
                            out.push((s, f.from_ns));
                        }
                        if f.to_ns < e {
                            out.push((f.to_ns, e));
                        }
                    }
                    out
                })
                .collect();
        }
        for (start_ns, end_ns) in pieces {
            report.periods.push(ServicePeriod {
                member: period.member.clone(),
                start_ns,
                end_ns,
            });
        }
    }
    report.periods.sort_by_key(|p| p.start_ns);
    let ps = &report.periods;
    for (i, a) in ps.iter().enumerate() {
        for b in &ps[i + 1..] {
            if b.member == a.member {
                continue;
            }
            let start = a.start_ns.max(b.start_ns);
            let end = a.end_ns.min(b.end_ns);
            if end > start {
                report.overlaps.push(Overlap {
                    a: a.member.clone(),
                    b: b.member.clone(),
                    start_ns: start,
                    end_ns: end,
                });
            }
        }
    }
    let mut covered_until: Option<i64> = None;
    let mut longest = 0_i64;
    for p in ps {
        if let Some(until) = covered_until {
            longest = longest.max(p.start_ns - until);
        }
        covered_until = Some(covered_until.map_or(p.end_ns, |u| u.max(p.end_ns)));
    }
    if let Some(until) = covered_until {
        longest = longest.max(until_ns - until);
    }
    report.longest_gap = Duration::from_nanos(longest.max(0) as u64);
    Ok(report)
}

/// CLOCK_MONOTONIC now, ns, as the periods files have it.
pub fn now_ns() -> i64 {
    i64::try_from(joc_ha_sidecar::role::monotonic_now_ns()).unwrap_or(i64::MAX)
}

/// The stack's JOC service periods up to now.
pub fn stack_services(stack: &Stack, frozen: &[Frozen]) -> Result<ServicesReport> {
    services_report(&stack.periods_dir, frozen, now_ns())
}

/// Notes in a JOC stand-in's periods file that the harness killed it (it
/// cannot say so itself).
pub fn note_joc_killed(stack: &Stack, pod: &str) -> Result<()> {
    crate::joc::append_period_record(
        &stack.periods_dir.join(format!("{pod}.joc.jsonl")),
        pod,
        "killed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, pod: &str, records: &[(&str, i64, u32)]) -> Result<()> {
        let text: String = records
            .iter()
            .map(|(event, ns, pid)| {
                format!(
                    "{}\n",
                    serde_json::json!({"member": format!("{pod}:abc"), "event": event, "mono_ns": ns, "pid": pid})
                )
            })
            .collect();
        std::fs::write(dir.join(format!("{pod}.joc.jsonl")), text)?;
        Ok(())
    }

    #[test]
    fn overlaps_gaps_kills_and_freezes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write(
            dir.path(),
            "joc-0",
            &[("start", 10, 1), ("stop", 20, 1), ("start", 50, 2)],
        )?;
        // joc-1 starts before joc-0 stops (overlap 18..20), is killed at 30.
        write(dir.path(), "joc-1", &[("start", 18, 7), ("killed", 30, 7)])?;
        let report = services_report(dir.path(), &[], 100)?;
        assert_eq!(report.periods.len(), 3);
        assert_eq!(
            report.overlaps,
            vec![Overlap {
                a: "joc-0".into(),
                b: "joc-1".into(),
                start_ns: 18,
                end_ns: 20
            }]
        );
        // 30..50 with nothing.
        assert_eq!(report.longest_gap, Duration::from_nanos(20));
        assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
        // joc-0 frozen 15..40: its first period is cut to 10..15, no overlap left.
        let frozen = [Frozen {
            member: "joc-0".into(),
            from_ns: 15,
            to_ns: 40,
        }];
        let report = services_report(dir.path(), &frozen, 100)?;
        assert!(report.overlaps.is_empty(), "{:?}", report.overlaps);
        // A restart without a record of the end: the old period ends at the new record.
        write(dir.path(), "joc-1", &[("start", 60, 7), ("start", 70, 8)])?;
        let report = services_report(dir.path(), &[], 100)?;
        let joc1: Vec<_> = report
            .periods
            .iter()
            .filter(|p| p.member == "joc-1")
            .collect();
        assert_eq!((joc1[0].start_ns, joc1[0].end_ns), (60, 70));
        assert_eq!(report.overlaps.len(), 2, "joc-0 runs from 50 on");
        let window = [FaultWindow {
            from_ns: 55,
            to_ns: 63,
        }];
        assert_eq!(
            report.overlaps_outside(&window).len(),
            1,
            "the overlap from 60 lies in the fault window, the one from 70 not"
        );
        Ok(())
    }

    #[test]
    fn the_longest_gap_within_a_window() {
        let period = |member: &str, start_ns, end_ns| ServicePeriod {
            member: member.into(),
            start_ns,
            end_ns,
        };
        let report = ServicesReport {
            periods: vec![period("a", 0, 10), period("b", 8, 20), period("a", 30, 40)],
            ..ServicesReport::default()
        };
        let ns = Duration::from_nanos;
        assert_eq!(report.longest_gap_within(5, 35), ns(10), "20..30");
        assert_eq!(report.longest_gap_within(0, 20), ns(0), "overlapping cover");
        assert_eq!(
            report.longest_gap_within(35, 60),
            ns(20),
            "40..60 at the end"
        );
        assert_eq!(report.longest_gap_within(22, 28), ns(6), "nothing at all");
        assert_eq!(report.longest_gap_within(-5, 5), ns(5), "before the first");
        assert!(report.running_at("b", 15) && !report.running_at("a", 15));
    }
}
