//! The stack benchmark (`make bench`): the whole joc-ha stack (control plane,
//! fake kubelet running the real sidecar and a stand-in cockpit per pod,
//! operator, database, a 3-member JocCluster), timed end to end as a user
//! sees it: by the active Service's EndpointSlices.
//!
//! * `failover_sigkill`, `failover_sigstop`, `failover_pod_delete`: from the
//!   fault (SIGKILL of the active member's sidecar, kept dead; SIGSTOP of it
//!   until the take-over; graceful deletion of the active pod) to the first
//!   moment the Service's EndpointSlices hold exactly one pod, another one.
//! * `switchover`: from the annotation write to the first moment the
//!   EndpointSlices hold exactly the named target; `switchover_gap`: the
//!   longest time in between with no endpoint at all.
//! * The same fail-overs with the baseline (`baseline-labeler`: a Kubernetes
//!   Lease with client-go's 15/10/2 s timings) driving the same kind of pods,
//!   in a stack of its own with several clusters faulted at once (each trial
//!   waits out a 15 s lease; the clusters are independent).
//! * At rest: sidecar RSS and CPU, database statements/s and Kubernetes API
//!   requests/min per member; and the operator's RSS with 200 JocClusters.
//!
//! Faults land at a random point of the renew cycle. Each trial starts from
//! a settled cluster: every member Ready, one pod labeled active and behind
//! the Service, then 1.5 s more so that standbys wait on the lease.
//!
//! Writes one JSON object per line to `target/joc-ha-bench/stack.jsonl` under
//! the repository root (after each case, so a partial run keeps what it
//! measured), an SVG of one SIGKILL fail-over to
//! `target/joc-ha-bench/failover-timeline.svg`, and a table to stdout.
//!
//! Usage: `bench-stack [--runs N] [--baseline-runs N] [--baseline-clusters K]
//! [--backend postgres|mariadb]... [--cases sigkill,sigstop,pod-delete,
//! switchover,resources,operator]`

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    LABEL_CLUSTER, LABEL_ROLE, ROLE_ACTIVE, active_service_name, pod as pod_names,
};
use joc_ha_tests::controlplane::ControlPlane;
use joc_ha_tests::db::Backend;
use joc_ha_tests::operator::http_get_body;
use joc_ha_tests::stack::{EndpointRecorder, Stack, StackOptions, WorkloadMode, is_ready};
use joc_ha_tests::wait::wait_for;
use joc_ha_tools::bench::{merge_results, percentiles, results_dir, round1, run_main};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const CASES: [&str; 6] = [
    "sigkill",
    "sigstop",
    "pod-delete",
    "switchover",
    "resources",
    "operator",
];
const FAILOVERS: [(&str, &str); 3] = [
    ("sigkill", "failover_sigkill"),
    ("sigstop", "failover_sigstop"),
    ("pod-delete", "failover_pod_delete"),
];
const RESULTS: &str = "stack.jsonl";
/// Standbys wait on the lease this long after the cluster settled.
const SETTLE: Duration = Duration::from_millis(1500);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// The sidecar's default renew interval; the baseline renews every 2 s.
const RENEW_MS: u64 = 1000;
const BASELINE_RENEW_MS: u64 = 2000;
const IDLE_WINDOW: Duration = Duration::from_secs(60);
const OPERATOR_CLUSTERS: usize = 200;

struct Options {
    runs: usize,
    baseline_runs: usize,
    baseline_clusters: usize,
    /// Only the baseline, compared with our numbers already in the results.
    baseline_only: bool,
    backends: Vec<Backend>,
    cases: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        runs: 50,
        baseline_runs: usize::MAX,
        baseline_clusters: 5,
        baseline_only: false,
        backends: Vec::new(),
        cases: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--runs" => options.runs = value("--runs")?.parse().context("--runs")?,
            "--baseline-runs" => {
                options.baseline_runs = value("--baseline-runs")?
                    .parse()
                    .context("--baseline-runs")?;
            }
            "--baseline-only" => options.baseline_only = true,
            "--baseline-clusters" => {
                options.baseline_clusters = value("--baseline-clusters")?
                    .parse()
                    .context("--baseline-clusters")?;
            }
            "--backend" => {
                for name in value("--backend")?.split(',') {
                    match Backend::from_name(name) {
                        Some(backend) if backend != Backend::Sqlite => {
                            options.backends.push(backend);
                        }
                        _ => bail!("unknown backend {name:?}: use postgres or mariadb"),
                    }
                }
            }
            "--cases" | "--case" => {
                for name in value("--cases")?.split(',') {
                    if !CASES.contains(&name) {
                        bail!("unknown case {name:?}: use {CASES:?}");
                    }
                    options.cases.push(name.to_owned());
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if options.runs == 0 || options.baseline_clusters == 0 {
        bail!("--runs and --baseline-clusters must be at least 1");
    }
    if options.baseline_runs == usize::MAX {
        options.baseline_runs = options.runs;
    }
    if options.backends.is_empty() {
        options.backends = vec![Backend::Postgres];
    }
    if options.cases.is_empty() {
        options.cases = CASES.iter().map(|c| (*c).to_owned()).collect();
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run_main("bench-stack", parse_options(&args), run)
}

/// Everything measured so far, written after each case.
#[derive(Default)]
struct Report {
    lines: Vec<Value>,
}

impl Report {
    fn push(&mut self, line: Value) -> Result<()> {
        let key = |v: &Value| (v["bench"].clone(), v["backend"].clone());
        self.lines.retain(|l| key(l) != key(&line));
        self.lines.push(line);
        merge_results(RESULTS, &self.lines)?;
        Ok(())
    }
}

async fn run(options: Options) -> Result<()> {
    let mut report = Report::default();
    let mut failures = Vec::new();
    for backend in &options.backends {
        if let Err(error) = bench_backend(*backend, &options, &mut report).await {
            eprintln!("{}: {error:#}", backend.name());
            failures.push(backend.name().to_owned());
        }
    }
    if options.cases.iter().any(|c| c == "operator") {
        match operator_rss(OPERATOR_CLUSTERS).await {
            Ok((mib, reconciled)) => report.push(json!({
                "bench": "operator_rss_mib_200_clusters",
                "value": round1(mib),
                "clusters": OPERATOR_CLUSTERS,
                "reconciled": reconciled,
            }))?,
            Err(error) => {
                eprintln!("operator: {error:#}");
                failures.push("operator".to_owned());
            }
        }
    }
    print_table(&report);
    println!("\nwritten to {}", results_dir()?.join(RESULTS).display());
    if !failures.is_empty() {
        bail!("benchmark failed for {failures:?}");
    }
    Ok(())
}

/// One JocCluster of a stack and the recorder of its active Service.
#[derive(Clone)]
struct Target {
    cluster: String,
    recorder: EndpointRecorder,
}

async fn bench_backend(backend: Backend, options: &Options, report: &mut Report) -> Result<()> {
    let name = backend.name();
    let wants = |case: &str| options.cases.iter().any(|c| c == case);
    let failovers: Vec<(&str, &str)> = FAILOVERS
        .iter()
        .copied()
        .filter(|(case, _)| wants(case))
        .collect();
    let mut ours: Vec<(&str, Vec<f64>, usize)> = Vec::new();

    if !options.baseline_only
        && (!failovers.is_empty() || wants("switchover") || wants("resources"))
    {
        eprintln!("{name}: starting the stack (joc-ha sidecars)");
        // The lease and sidecar path with the stand-in cockpit (generic
        // workload); JOC's own agreement is measured by bench-js7.
        let stack = Stack::start(StackOptions {
            backend,
            workload: WorkloadMode::Generic,
            ..StackOptions::default()
        })
        .await?;
        stack.wait_members_ready(SETTLE_TIMEOUT).await?;
        let target = Target {
            cluster: stack.options.name.clone(),
            recorder: stack.endpoints.clone(),
        };
        let pods = PodRecorder::start(stack.client(), &stack.options.namespace, &target.cluster);
        if wants("resources") {
            for line in resources(&stack, &target, backend).await? {
                report.push(line)?;
            }
        }
        if wants("switchover") {
            let mut took = Vec::new();
            let mut gaps = Vec::new();
            let mut failed = 0;
            for run in 0..options.runs {
                match switchover(&stack, &target).await {
                    Ok((ms, gap)) => {
                        eprintln!(
                            "{name} switchover {}/{}: {ms:.1} ms, gap {gap:.1} ms",
                            run + 1,
                            options.runs
                        );
                        took.push(ms);
                        gaps.push(gap);
                    }
                    Err(error) => {
                        eprintln!("{name} switchover {}: {error:#}", run + 1);
                        failed += 1;
                    }
                }
            }
            report.push(timing_line("switchover", name, &took, failed, None))?;
            report.push(timing_line("switchover_gap", name, &gaps, failed, None))?;
        }
        let mut picture: Option<(Trial, Vec<PodState>)> = None;
        for (case, bench) in &failovers {
            let mut samples = Vec::new();
            let mut trials = Vec::new();
            let mut failed = 0;
            for run in 0..options.runs {
                match failover(&stack, &target, case, RENEW_MS, Duration::from_secs(30)).await {
                    Ok(trial) => {
                        eprintln!(
                            "{name} {bench} {}/{}: {:.1} ms ({} → {})",
                            run + 1,
                            options.runs,
                            trial.ms(),
                            trial.from,
                            trial.to
                        );
                        samples.push(trial.ms());
                        trials.push(trial);
                    }
                    Err(error) => {
                        eprintln!("{name} {bench} {}: {error:#}", run + 1);
                        failed += 1;
                    }
                }
            }
            report.push(timing_line(bench, name, &samples, failed, None))?;
            if *case == "sigkill" && !trials.is_empty() {
                // The median trial is the picture.
                trials.sort_by(|a, b| a.ms().total_cmp(&b.ms()));
                let trial = trials.swap_remove(trials.len() / 2);
                picture = Some((trial, pods.states()));
            }
            ours.push((bench, samples, failed));
        }
        if let Some((trial, states)) = picture {
            let svg = timeline_svg(
                &trial,
                &states,
                &target.recorder.timeline(),
                &stack.member_names(),
                name,
            );
            let path = results_dir()?.join("failover-timeline.svg");
            std::fs::write(&path, svg)?;
            eprintln!("{name}: picture of one fail-over in {}", path.display());
        }
        report.push(never_two_line(name, "joc-ha", &[target]))?;
    }

    if !failovers.is_empty() && options.baseline_runs > 0 {
        eprintln!(
            "{name}: starting the baseline stack ({} clusters labeled by Kubernetes Leases)",
            options.baseline_clusters
        );
        let stack = Stack::start(StackOptions {
            backend,
            baseline_labeler: true,
            workload: WorkloadMode::Generic,
            ..StackOptions::default()
        })
        .await?;
        let mut targets = vec![Target {
            cluster: stack.options.name.clone(),
            recorder: stack.endpoints.clone(),
        }];
        for i in 1..options.baseline_clusters {
            let cluster = format!("{}-b{i}", stack.options.name);
            stack.add_cluster(&cluster).await?;
            targets.push(Target {
                recorder: EndpointRecorder::start(
                    stack.client(),
                    &stack.options.namespace,
                    &active_service_name(&cluster),
                ),
                cluster,
            });
        }
        for (case, bench) in &failovers {
            let mut samples = Vec::new();
            let mut failed = 0;
            while samples.len() + failed < options.baseline_runs {
                let round = targets
                    .iter()
                    .take(options.baseline_runs - samples.len() - failed)
                    .map(|t| failover(&stack, t, case, BASELINE_RENEW_MS, Duration::from_secs(60)));
                for result in futures::future::join_all(round).await {
                    match result {
                        Ok(trial) => {
                            eprintln!(
                                "{name} baseline {bench} {}/{}: {:.1} ms ({} → {})",
                                samples.len() + 1,
                                options.baseline_runs,
                                trial.ms(),
                                trial.from,
                                trial.to
                            );
                            samples.push(trial.ms());
                        }
                        Err(error) => {
                            eprintln!("{name} baseline {bench}: {error:#}");
                            failed += 1;
                        }
                    }
                }
            }
            let line = match ours.iter().find(|(b, _, _)| b == bench) {
                Some((_, own, own_failed)) => {
                    timing_line(bench, name, own, *own_failed, Some((&samples, failed)))
                }
                // Our numbers from an earlier run, if there are any.
                None => match earlier_line(bench, name) {
                    Some(ours) => with_baseline(ours, &samples, failed),
                    None => timing_line(&format!("baseline_{bench}"), name, &samples, failed, None),
                },
            };
            report.push(line)?;
        }
        report.push(never_two_line(name, "baseline", &targets))?;
    }
    Ok(())
}

/// Moments the active Services' EndpointSlices (all slices together) held
/// more than one pod, over the whole run of `who` (joc-ha or baseline).
fn never_two_line(backend: &str, who: &str, targets: &[Target]) -> Value {
    let violations: Vec<String> = targets
        .iter()
        .flat_map(|t| t.recorder.violations())
        .map(|pods| pods.into_iter().collect::<Vec<_>>().join("+"))
        .collect();
    if !violations.is_empty() {
        eprintln!(
            "{backend} {who}: the active Service routed to several pods at once: {violations:?}"
        );
    }
    json!({
        "bench": format!("several_active_endpoints_{}", who.replace('-', "_")),
        "backend": backend,
        "value": violations.len(),
        "seen": violations,
    })
}

/// Our line for `bench` from the results file (an earlier run).
fn earlier_line(bench: &str, backend: &str) -> Option<Value> {
    let text = std::fs::read_to_string(results_dir().ok()?.join(RESULTS)).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["bench"] == bench && v["backend"] == backend && v["runs"].is_u64())
}

/// `line` with the baseline's numbers and the ratios (from its p50/p99).
fn with_baseline(mut line: Value, baseline: &[f64], baseline_failed: usize) -> Value {
    let (b50, b99, bmax) = percentiles(baseline);
    line["baseline_runs"] = json!(baseline.len());
    line["baseline_p50_ms"] = json!(round1(b50));
    line["baseline_p99_ms"] = json!(round1(b99));
    line["baseline_max_ms"] = json!(round1(bmax));
    if baseline_failed > 0 {
        line["baseline_failed_runs"] = json!(baseline_failed);
    }
    let (p50, p99) = (line["p50_ms"].as_f64(), line["p99_ms"].as_f64());
    if let (Some(p50), Some(p99)) = (p50, p99)
        && b50 > 0.0
        && b99 > 0.0
    {
        line["ratio_p50"] = json!((p50 / b50 * 1000.0).round() / 1000.0);
        line["ratio_p99"] = json!((p99 / b99 * 1000.0).round() / 1000.0);
    }
    line
}

/// A JSON line for timed trials, with the baseline's numbers and the ratio
/// (ours / baseline) when it ran.
fn timing_line(
    bench: &str,
    backend: &str,
    samples: &[f64],
    failed: usize,
    baseline: Option<(&[f64], usize)>,
) -> Value {
    let (p50, p99, max) = percentiles(samples);
    let mut line = json!({
        "bench": bench,
        "backend": backend,
        "runs": samples.len(),
        "p50_ms": round1(p50),
        "p99_ms": round1(p99),
        "max_ms": round1(max),
    });
    if failed > 0 {
        line["failed_runs"] = json!(failed);
    }
    if let Some((baseline, baseline_failed)) = baseline {
        line = with_baseline(line, baseline, baseline_failed);
    }
    line
}

/// One timed fault.
struct Trial {
    from: String,
    to: String,
    fault: Instant,
    /// First moment the Service held exactly `to`.
    done: Instant,
}

impl Trial {
    fn ms(&self) -> f64 {
        self.done.duration_since(self.fault).as_secs_f64() * 1000.0
    }
}

fn member_names(stack: &Stack, cluster: &str) -> Vec<String> {
    (0..stack.options.members)
        .map(|i| format!("{cluster}-{i}"))
        .collect()
}

/// Waits until every member of `target` is Ready with its sidecar running,
/// one pod is labeled active and the Service routes to it alone; then
/// [`SETTLE`]. Returns the active pod.
async fn settle(stack: &Stack, target: &Target) -> Result<String> {
    let names = member_names(stack, &target.cluster);
    let namespace = &stack.options.namespace;
    let selector = format!("{LABEL_CLUSTER}={}", target.cluster);
    let active = wait_for(
        &format!("{} to settle", target.cluster),
        SETTLE_TIMEOUT,
        Duration::from_millis(100),
        || {
            let names = names.clone();
            let selector = selector.clone();
            async move {
                let current = target.recorder.current();
                let [routed] = current.iter().collect::<Vec<_>>()[..] else {
                    return None;
                };
                let pods = stack
                    .pods()
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let mut labeled = Vec::new();
                for name in &names {
                    let pod = pods.items.iter().find(|p| p.name_any() == *name)?;
                    let running = stack
                        .kubelet
                        .process(namespace, name, pod_names::SIDECAR_CONTAINER)
                        .is_some_and(|p| p.is_running());
                    if !is_ready(pod) || pod.metadata.deletion_timestamp.is_some() || !running {
                        return None;
                    }
                    if pod.labels().get(LABEL_ROLE).map(String::as_str) == Some(ROLE_ACTIVE) {
                        labeled.push(name.clone());
                    }
                }
                (labeled == [routed.clone()]).then(|| routed.clone())
            }
        },
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    Ok(active)
}

/// The first moment at or after `since` when the Service held exactly one
/// pod other than `old`. After a pod deletion the StatefulSet recreates the
/// pod under the same name: once the Service has dropped `old`, a single
/// endpoint of that name is the new pod and counts too.
fn first_single_after(
    recorder: &EndpointRecorder,
    since: Instant,
    old: &str,
    same_name_is_new: bool,
) -> Option<(Instant, String)> {
    let mut old_gone = false;
    recorder
        .timeline()
        .into_iter()
        .filter(|(at, _)| *at >= since)
        .find_map(|(at, pods)| {
            old_gone |= !pods.contains(old);
            match pods.iter().collect::<Vec<_>>()[..] {
                [one] if one != old || (same_name_is_new && old_gone) => Some((at, one.clone())),
                _ => None,
            }
        })
}

/// One fail-over of `target` after `case`, at a random point of a renew
/// cycle of `renew_ms`.
async fn failover(
    stack: &Stack,
    target: &Target,
    case: &str,
    renew_ms: u64,
    timeout: Duration,
) -> Result<Trial> {
    let old = settle(stack, target).await?;
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..renew_ms))).await;
    let namespace = &stack.options.namespace;
    let sidecar = stack
        .kubelet
        .process(namespace, &old, pod_names::SIDECAR_CONTAINER)
        .context("no sidecar process")?;
    let fault = Instant::now();
    match case {
        "sigkill" => {
            // Kept dead until the take-over, as a crashed pod would be.
            stack
                .kubelet
                .block_starts(namespace, &old, pod_names::SIDECAR_CONTAINER);
            sidecar.kill().await?;
        }
        "sigstop" => sidecar.freeze()?,
        "pod-delete" => {
            stack.pods().delete(&old, &DeleteParams::default()).await?;
        }
        other => bail!("unknown fail-over case {other}"),
    }
    let taken = wait_for(
        &format!(
            "{}: a new single endpoint after {case} of {old}",
            target.cluster
        ),
        timeout,
        Duration::from_millis(5),
        || async { first_single_after(&target.recorder, fault, &old, case == "pod-delete") },
    )
    .await;
    match case {
        "sigkill" => stack
            .kubelet
            .allow_starts(namespace, &old, pod_names::SIDECAR_CONTAINER),
        "sigstop" => sidecar.thaw()?,
        _ => {}
    }
    let (done, to) = taken?;
    Ok(Trial {
        from: old,
        to,
        fault,
        done,
    })
}

/// One switch-over to the next member: (ms until the Service holds exactly
/// the target, longest ms with no endpoint in between).
async fn switchover(stack: &Stack, target: &Target) -> Result<(f64, f64)> {
    let old = settle(stack, target).await?;
    let names = stack.member_names();
    let index = names.iter().position(|n| *n == old).unwrap_or(0);
    let to = names[(index + 1) % names.len()].clone();
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..RENEW_MS))).await;
    let requested = Instant::now();
    stack.annotate_switchover(&to).await?;
    let done = wait_for(
        &format!("the Service to route to {to} alone"),
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async {
            target
                .recorder
                .timeline()
                .into_iter()
                .filter(|(at, _)| *at >= requested)
                .find(|(_, pods)| pods.len() == 1 && pods.contains(&to))
                .map(|(at, _)| at)
        },
    )
    .await?;
    let mut gap = Duration::ZERO;
    let mut empty_since: Option<Instant> = None;
    for (at, pods) in target
        .recorder
        .timeline()
        .iter()
        .filter(|(at, _)| *at >= requested && *at <= done)
    {
        match (pods.is_empty(), empty_since) {
            (true, None) => empty_since = Some(*at),
            (false, Some(since)) => {
                gap = gap.max(at.duration_since(since));
                empty_since = None;
            }
            _ => {}
        }
    }
    Ok((
        done.duration_since(requested).as_secs_f64() * 1000.0,
        gap.as_secs_f64() * 1000.0,
    ))
}

/// `VmRSS` of a process in MiB.
fn rss_mib(pid: i32) -> Result<f64> {
    status_mib(pid, "VmRSS")
}

/// A `/proc/<pid>/status` size field (`VmRSS`, `RssAnon`, `RssFile`) in MiB.
fn status_mib(pid: i32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `)`.
    let ticks: f64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok(ticks / hz)
}

/// `joc_ha_kube_api_requests_total` from a sidecar's /metrics.
async fn api_requests(stack: &Stack, pod: &str) -> Result<f64> {
    let url = stack.sidecar_url(pod).context("no sidecar port")?;
    let text = http_get_body(&format!("{url}/metrics")).await?;
    text.lines()
        .find(|l| l.starts_with("joc_ha_kube_api_requests_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{pod}: no joc_ha_kube_api_requests_total in /metrics"))
}

/// A database's count of statements (PostgreSQL: committed and rolled-back
/// transactions of the cluster's database, each lease statement runs in its
/// own; MariaDB: `Questions`), read on `conn`.
enum StatsConn {
    Postgres(sqlx::PgConnection),
    MariaDb(sqlx::MySqlConnection),
}

impl StatsConn {
    async fn open(backend: Backend, url: &str) -> Result<StatsConn> {
        use sqlx::Connection as _;
        Ok(match backend {
            Backend::Postgres => StatsConn::Postgres(sqlx::PgConnection::connect(url).await?),
            Backend::MariaDb => StatsConn::MariaDb(sqlx::MySqlConnection::connect(url).await?),
            Backend::Sqlite => bail!("no statement statistics on SQLite"),
        })
    }

    async fn count(&mut self) -> Result<f64> {
        Ok(match self {
            StatsConn::Postgres(conn) => {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                     WHERE datname = current_database()",
                )
                .fetch_one(&mut *conn)
                .await?;
                n as f64
            }
            StatsConn::MariaDb(conn) => {
                let (_, value): (String, String) =
                    sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
                        .fetch_one(&mut *conn)
                        .await?;
                value.parse()?
            }
        })
    }
}

/// At rest over [`IDLE_WINDOW`]: per sidecar RSS, CPU, API requests; per
/// member database statements.
async fn resources(stack: &Stack, target: &Target, backend: Backend) -> Result<Vec<Value>> {
    settle(stack, target).await?;
    // Let start-up traffic (watches opening, first labels) pass.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let names = stack.member_names();
    let mut pids = Vec::new();
    for name in &names {
        let process = stack.sidecar(name).context("no sidecar process")?;
        pids.push(process.pid().as_raw());
    }
    let mut stats = StatsConn::open(backend, &stack.database_url).await?;
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_>>()?;
    let mut api_before = Vec::new();
    for name in &names {
        api_before.push(api_requests(stack, name).await?);
    }
    let db_before = stats.count().await?;
    let started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let db_after = stats.count().await?;
    let window = started.elapsed().as_secs_f64();
    let cpu_after: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_>>()?;
    let mut api_after = Vec::new();
    for name in &names {
        api_after.push(api_requests(stack, name).await?);
    }
    let rss: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect::<Result<_>>()?;
    // Private memory, and pages of the binary and libraries (shared, and
    // reclaimable under pressure).
    let anon: Vec<f64> = pids
        .iter()
        .map(|p| status_mib(*p, "RssAnon"))
        .collect::<Result<_>>()?;
    let file: Vec<f64> = pids
        .iter()
        .map(|p| status_mib(*p, "RssFile"))
        .collect::<Result<_>>()?;
    for (i, name) in names.iter().enumerate() {
        if stack.sidecar(name).map(|p| p.pid().as_raw()) != Some(pids[i]) {
            bail!("{name}'s sidecar restarted during the idle window");
        }
    }
    let members = names.len() as f64;
    let cpu: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| (a - b) / window * 100.0)
        .collect();
    let api: Vec<f64> = api_before
        .iter()
        .zip(&api_after)
        .map(|(b, a)| (a - b) / (window / 60.0))
        .collect();
    // One statement of ours (the first count) is in the window.
    let statements = ((db_after - db_before - 1.0).max(0.0)) / window / members;
    eprintln!(
        "{}: at rest over {window:.0} s: RSS {rss:.2?} MiB, CPU {cpu:.3?} %, API {api:.2?} req/min, {statements:.3} statements/s per member",
        backend.name()
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let name = backend.name();
    Ok(vec![
        json!({"bench": "sidecar_rss_mib", "backend": name, "value": round2(max(&rss)),
               "mean": round2(mean(&rss)), "anon_mib": round2(max(&anon)),
               "file_mib": round2(max(&file)), "members": names.len()}),
        json!({"bench": "sidecar_idle_cpu_percent", "backend": name, "value": round3(max(&cpu)),
               "mean": round3(mean(&cpu)), "window_s": window.round()}),
        json!({"bench": "db_statements_per_s_per_member", "backend": name, "value": round3(statements),
               "window_s": window.round()}),
        json!({"bench": "kube_api_requests_per_min_per_member", "backend": name,
               "value": round2(mean(&api)), "max": round2(max(&api)), "window_s": window.round()}),
    ])
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One operator process reconciling `n` JocClusters (each with its Secret)
/// on a control plane without a kubelet: VmRSS once all are reconciled.
async fn operator_rss(n: usize) -> Result<(f64, usize)> {
    eprintln!("operator: {n} JocClusters");
    let plane = ControlPlane::start().await?;
    joc_ha_tests::operator::install_crd(&plane).await?;
    let namespace = "js7";
    plane.create_namespace(namespace).await?;
    let operator = joc_ha_tests::operator::start_with_chart_account(&plane).await?;
    let client = plane.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let clusters: Api<JocCluster> = Api::namespaced(client.clone(), namespace);
    for i in 0..n {
        let name = format!("joc-{i:03}");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-db")},
            "stringData": {"url": "postgres://joc:secret@db.example:5432/joc"},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        let cluster: JocCluster = serde_json::from_value(json!({
            "apiVersion": "joc-ha.dev/v1alpha1",
            "kind": "JocCluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "image": "sosberlin/js7:joc-2-8-1",
                "database": {"type": "postgresql", "secretRef": {"name": format!("{name}-db")}},
            }
        }))?;
        clusters.create(&PostParams::default(), &cluster).await?;
    }
    // Until all are reconciled, or none more for a minute (the harness's
    // /24 Service range holds about 250 ClusterIPs, three per cluster).
    let started = Instant::now();
    let mut best = (0, Instant::now());
    let reconciled = loop {
        operator.ensure_running()?;
        let list = clusters.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation
            })
            .count();
        if done > best.0 {
            best = (done, Instant::now());
        }
        if done == n || best.1.elapsed() > Duration::from_secs(60) {
            break done;
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!(
                "only {done} of {n} JocClusters reconciled after 900 s; {}",
                operator.describe()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!(
        "operator: {reconciled} of {n} reconciled after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Let requeues and the last status writes pass.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mib = rss_mib(operator.process().pid().as_raw())?;
    eprintln!("operator: RSS {mib:.1} MiB with {n} JocClusters ({reconciled} reconciled)");
    Ok((mib, reconciled))
}

/// A member pod's role label and readiness at an instant.
#[derive(Clone)]
struct PodState {
    at: Instant,
    pod: String,
    role: Option<String>,
    ready: bool,
    exists: bool,
}

/// Records every change of the cluster's pods (role label, readiness).
#[derive(Clone, Default)]
struct PodRecorder {
    states: Arc<Mutex<Vec<PodState>>>,
}

impl PodRecorder {
    fn start(client: Client, namespace: &str, cluster: &str) -> PodRecorder {
        let recorder = PodRecorder::default();
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
        let states = recorder.states.clone();
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let (pod, exists) = match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, true),
                    watcher::Event::Delete(pod) => (pod, false),
                    _ => continue,
                };
                let state = PodState {
                    at: Instant::now(),
                    pod: pod.name_any(),
                    role: pod.labels().get(LABEL_ROLE).cloned(),
                    ready: exists && is_ready(&pod) && pod.metadata.deletion_timestamp.is_none(),
                    exists,
                };
                let Ok(mut states) = states.lock() else {
                    return;
                };
                states.push(state);
            }
        });
        recorder
    }

    fn states(&self) -> Vec<PodState> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An SVG of one fail-over: a lane per member (role label: active green,
/// standby grey; a thin bar below: Ready), a lane for the active Service's
/// endpoints, the fault and the moment the Service held the new pod alone.
fn timeline_svg(
    trial: &Trial,
    states: &[PodState],
    endpoints: &[(Instant, BTreeSet<String>)],
    members: &[String],
    backend: &str,
) -> String {
    let before = Duration::from_millis(500);
    let after = Duration::from_millis(1000);
    let start = trial.fault.checked_sub(before).unwrap_or(trial.fault);
    let end = trial.done + after;
    let span = end.duration_since(start).as_secs_f64();
    let (left, width, lane, top) = (170.0, 760.0, 46.0, 70.0);
    let x = |at: Instant| {
        let t = if at < start {
            0.0
        } else {
            at.duration_since(start).as_secs_f64()
        };
        left + (t / span).min(1.0) * width
    };
    let colour = |role: Option<&str>| match role {
        Some("active") => "#2e9e44",
        Some("standby") => "#b8b8b8",
        _ => "#ffffff",
    };
    let lanes = members.len() + 1;
    let height = top + lane * lanes as f64 + 70.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="13">"#,
        w = left + width + 30.0
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="24" font-size="15" font-weight="bold">Fail-over after SIGKILL of {from}'s sidecar ({backend}): {ms:.0} ms until the Service routes to {to} alone</text>"#,
        from = trial.from,
        to = trial.to,
        ms = trial.ms()
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="46" fill="#555">lanes: role label (green active, grey standby); thin bar: pod Ready (blue) or not (orange); bottom: pods behind the active Service</text>"##
    );
    for (i, member) in members.iter().enumerate() {
        let y = top + lane * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{ty}">{member}</text>"#,
            ty = y + 20.0
        );
        // Each state holds until the next one of that pod.
        let mine: Vec<&PodState> = states.iter().filter(|s| s.pod == *member).collect();
        for (j, state) in mine.iter().enumerate() {
            let from = state.at.max(start);
            let to = mine.get(j + 1).map_or(end, |n| n.at.min(end));
            if to <= start || from >= end || to <= from {
                continue;
            }
            let (x0, x1) = (x(from), x(to));
            if state.exists {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{x0:.1}" y="{y}" width="{w:.1}" height="26" fill="{c}" stroke="#666" stroke-width="0.5"/>"##,
                    w = x1 - x0,
                    c = colour(state.role.as_deref())
                );
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x0:.1}" y="{ry}" width="{w:.1}" height="5" fill="{c}"/>"#,
                    ry = y + 29.0,
                    w = x1 - x0,
                    c = if state.ready { "#3a6fd8" } else { "#e0a030" }
                );
            }
        }
    }
    let y = top + lane * members.len() as f64;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{ty}">Service endpoints</text>"#,
        ty = y + 20.0
    );
    for (j, (at, pods)) in endpoints.iter().enumerate() {
        let from = (*at).max(start);
        let to = endpoints.get(j + 1).map_or(end, |(n, _)| (*n).min(end));
        if to <= start || from >= end || to <= from {
            continue;
        }
        let (x0, x1) = (x(from), x(to));
        let label = if pods.is_empty() {
            "none".to_owned()
        } else {
            pods.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        let fill = match pods.len() {
            0 => "#f3d0d0",
            1 => "#cfe3f7",
            _ => "#d83a3a",
        };
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y}" width="{w:.1}" height="26" fill="{fill}" stroke="#666" stroke-width="0.5"/><text x="{tx:.1}" y="{ty}" font-size="11">{label}</text>"##,
            w = x1 - x0,
            tx = x0 + 4.0,
            ty = y + 17.0
        );
    }
    let bottom = y + lane;
    for (at, text, colour) in [
        (trial.fault, "SIGKILL".to_owned(), "#d83a3a"),
        (trial.done, format!("+{:.0} ms", trial.ms()), "#1a5fb4"),
    ] {
        let xi = x(at);
        let _ = writeln!(
            svg,
            r#"<line x1="{xi:.1}" y1="{y0}" x2="{xi:.1}" y2="{bottom}" stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/><text x="{tx:.1}" y="{ty}" fill="{colour}">{text}</text>"#,
            y0 = top - 8.0,
            tx = xi + 3.0,
            ty = bottom + 16.0
        );
    }
    // Axis: ms relative to the fault.
    let step = if span > 4.0 {
        1000
    } else if span > 1.5 {
        250
    } else {
        100
    };
    let first = -(before.as_millis() as i64);
    let last = end.duration_since(trial.fault).as_millis() as i64;
    let mut t = (first / step) * step;
    while t <= last {
        let at = if t < 0 {
            trial.fault.checked_sub(Duration::from_millis((-t) as u64))
        } else {
            Some(trial.fault + Duration::from_millis(t as u64))
        };
        if let Some(at) = at
            && at >= start
        {
            let xi = x(at);
            let _ = writeln!(
                svg,
                r##"<line x1="{xi:.1}" y1="{b}" x2="{xi:.1}" y2="{b2}" stroke="#333"/><text x="{tx:.1}" y="{ty}" font-size="10" fill="#333">{t}</text>"##,
                b = bottom + 24.0,
                b2 = bottom + 30.0,
                tx = xi - 8.0,
                ty = bottom + 42.0
            );
        }
        t += step;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{tx}" y="{ty}" font-size="11" fill="#333">ms after the fault</text>"##,
        tx = left + width - 100.0,
        ty = bottom + 58.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn print_table(report: &Report) {
    println!(
        "\n{:<38} {:<9} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8}",
        "bench",
        "backend",
        "runs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "base p50",
        "base p99",
        "p99/base"
    );
    let number = |v: &Value, key: &str| {
        v[key]
            .as_f64()
            .map_or("-".to_owned(), |n| format!("{n:.1}"))
    };
    for line in &report.lines {
        let bench = line["bench"].as_str().unwrap_or_default();
        let backend = line["backend"].as_str().unwrap_or("-");
        if let Some(value) = line["value"].as_f64() {
            println!("{bench:<38} {backend:<9} {:>5} {value:>9.3}", "");
            continue;
        }
        println!(
            "{bench:<38} {backend:<9} {:>5} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8}",
            line["runs"].as_u64().unwrap_or(0),
            number(line, "p50_ms"),
            number(line, "p99_ms"),
            number(line, "max_ms"),
            number(line, "baseline_p50_ms"),
            number(line, "baseline_p99_ms"),
            line["ratio_p99"]
                .as_f64()
                .map_or("-".to_owned(), |r| format!("{r:.3}")),
        );
    }
}
