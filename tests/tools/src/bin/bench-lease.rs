//! The lease benchmark (`make bench-lease`): three contender processes per
//! backend with the default timing (TTL 5 s, renew every 1 s), timed
//! take-overs after SIGKILL, SIGSTOP, release and hand-over, and the
//! statements each member sends in steady state.
//!
//! Writes one JSON object per line to `target/joc-ha-bench/lease.jsonl` under
//! the repository root (lines of other benchmarks and backends are kept) and
//! a table to stdout. A take-over is timed from the fault (the harness's
//! `CLOCK_MONOTONIC` just before the signal) to the new holder's "acquired"
//! record (when its workload learns it is active).
//!
//! Usage: `bench-lease [--runs N] [--backend postgres|mariadb|sqlite]...
//! [--case sigkill|sigstop|release|handover|statements]...`
//! (`bench-lease contender ...` runs a contender; the benchmark starts itself
//! that way so it needs no other binary.)

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use joc_ha_standins::contender;
use joc_ha_tests::db::{Backend, TestDb};
use joc_ha_tests::lease_history::group::{ContenderCommand, Group, Timing, monotonic_ns};
use joc_ha_tests::process::ProcessSignal;
use joc_ha_tools::bench::{merge_results, percentiles, round1, run_main};
use serde_json::json;

const MEMBERS: [&str; 3] = ["m0", "m1", "m2"];
const CASES: [&str; 4] = ["sigkill", "sigstop", "release", "handover"];
/// A standby counts as ready for the next trial once connected this long
/// (it has heartbeated and its waiter watches the holder).
const SETTLE: Duration = Duration::from_millis(1500);
const STEADY_WINDOW: Duration = Duration::from_secs(20);

struct Options {
    runs: usize,
    backends: Vec<Backend>,
    cases: Vec<String>,
}

fn parse_options(args: &[OsString]) -> Result<Options> {
    let mut options = Options {
        runs: 50,
        backends: Vec::new(),
        cases: Vec::new(),
    };
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => options.runs = value("--runs")?.parse().context("--runs")?,
            "--backend" => {
                for name in value("--backend")?.split(',') {
                    options.backends.push(
                        Backend::from_name(name)
                            .with_context(|| format!("unknown backend {name:?}"))?,
                    );
                }
            }
            "--case" => {
                for name in value("--case")?.split(',') {
                    if !CASES.contains(&name) && name != "statements" {
                        bail!("unknown case {name:?}: use {CASES:?} or statements");
                    }
                    options.cases.push(name.to_owned());
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if options.backends.is_empty() {
        options.backends = Backend::ALL.to_vec();
    }
    if options.cases.is_empty() {
        options.cases = CASES.iter().map(|c| (*c).to_owned()).collect();
        options.cases.push("statements".to_owned());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "contender") {
        return contender::contender_main(args[1..].iter().cloned());
    }
    run_main("bench-lease", parse_options(&args[1..]), run)
}

/// One output line.
#[derive(Debug, Clone)]
enum Line {
    Takeover {
        bench: String,
        backend: &'static str,
        samples: Vec<f64>,
    },
    Statements {
        backend: &'static str,
        per_member: f64,
    },
}

impl Line {
    fn json(&self) -> serde_json::Value {
        match self {
            Line::Takeover {
                bench,
                backend,
                samples,
            } => {
                let (p50, p99, max) = percentiles(samples);
                json!({
                    "bench": bench,
                    "backend": backend,
                    "runs": samples.len(),
                    "p50_ms": round1(p50),
                    "p99_ms": round1(p99),
                    "max_ms": round1(max),
                })
            }
            Line::Statements {
                backend,
                per_member,
            } => json!({
                "bench": "lease_statements_per_s",
                "backend": backend,
                "per_member": (per_member * 1000.0).round() / 1000.0,
            }),
        }
    }
}

async fn run(options: Options) -> Result<()> {
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for backend in &options.backends {
        match bench_backend(*backend, &options).await {
            Ok(mut measured) => lines.append(&mut measured),
            Err(error) => {
                eprintln!("{}: {error:#}", backend.name());
                failures.push(backend.name());
            }
        }
    }
    let path = write_results(&lines)?;
    print_table(&lines);
    println!("\nwritten to {}", path.display());
    if !failures.is_empty() {
        bail!("benchmark failed for {failures:?}");
    }
    Ok(())
}

async fn bench_backend(backend: Backend, options: &Options) -> Result<Vec<Line>> {
    let db = TestDb::start(backend).await?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("joc-ha-bench-lease-{}-", backend.name()))
        .tempdir()?;
    let command = ContenderCommand {
        program: std::env::current_exe().context("own path")?,
        prefix_args: vec![
            "contender".to_owned(),
            "--stats-every-s".to_owned(),
            "1".to_owned(),
        ],
    };
    let mut group = Group::new(dir.path(), command, &db.url(), Timing::DEFAULT)?;
    for member in MEMBERS {
        group.spawn(member, false)?;
    }
    group.wait_single_holder(Duration::from_secs(30)).await?;
    let mut lines = Vec::new();
    let result = async {
        for case in &options.cases {
            if case == "statements" {
                settle(&group).await?;
                let per_member = steady_statements(&group).await?;
                eprintln!(
                    "{}: {per_member:.3} statements/s per member",
                    backend.name()
                );
                lines.push(Line::Statements {
                    backend: backend.name(),
                    per_member,
                });
                continue;
            }
            let mut samples = Vec::with_capacity(options.runs);
            for run in 0..options.runs {
                settle(&group).await?;
                let took = trial(&mut group, case).await?;
                samples.push(took);
                eprintln!(
                    "{} {case} {}/{}: {took:.1} ms",
                    backend.name(),
                    run + 1,
                    options.runs
                );
            }
            lines.push(Line::Takeover {
                bench: format!("lease_takeover_{case}").replace("takeover_handover", "handover"),
                backend: backend.name(),
                samples,
            });
        }
        anyhow::Ok(())
    }
    .await;
    // The whole run is also a history: check it.
    let checked = group.finish().await;
    result?;
    let periods = checked?;
    eprintln!(
        "{}: history of {} active periods checked: no overlap, terms increasing",
        backend.name(),
        periods.len()
    );
    drop(dir);
    Ok(lines)
}

/// Waits for one holder and every other member connected for [`SETTLE`].
async fn settle(group: &Group) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let holders = group.holders()?;
        let standbys = group.settled_standbys(SETTLE)?;
        if holders.len() == 1 && standbys.len() + 1 == MEMBERS.len() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "cluster did not settle: holders {holders:?}, ready standbys {standbys:?}\n{}",
                group.all_log_tails(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One timed fault; returns the take-over time in ms.
async fn trial(group: &mut Group, case: &str) -> Result<f64> {
    let (holder, _) = group.wait_single_holder(Duration::from_secs(10)).await?;
    let bound = Timing::DEFAULT.ttl() + Duration::from_secs(5);
    // Faults land at a random point of the renew cycle, not phase-locked to
    // the record that ended the settling.
    let phase = rand::random_range(0..Timing::DEFAULT.renew_ms);
    tokio::time::sleep(Duration::from_millis(phase)).await;
    match case {
        "sigkill" => {
            let (sent, _) = group.kill(&holder).await?;
            let (_, _, at) = group.wait_acquired_after(sent, None, bound).await?;
            group.spawn(&holder, false)?;
            Ok(ms(at - sent))
        }
        "sigstop" => {
            let sent = group.freeze(&holder)?;
            let (_, _, at) = group
                .wait_acquired_after(sent, Some(&holder), bound)
                .await?;
            group.thaw(&holder)?;
            // It notices its deadline passed and stands by.
            group
                .wait_event(&holder, "demoted", sent, Duration::from_secs(10))
                .await?;
            Ok(ms(at - sent))
        }
        "release" => {
            let sent = group.signal(&holder, ProcessSignal::SIGUSR1)?;
            let (_, _, at) = group
                .wait_acquired_after(sent, Some(&holder), bound)
                .await?;
            group
                .wait_event(&holder, "rejoined", sent, Duration::from_secs(40))
                .await?;
            Ok(ms(at - sent))
        }
        "handover" => {
            let sent = group.signal(&holder, ProcessSignal::SIGUSR2)?;
            let (_, _, at) = group
                .wait_acquired_after(sent, Some(&holder), bound)
                .await?;
            Ok(ms(at - sent))
        }
        other => bail!("unknown case {other}"),
    }
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Statements per second per member over [`STEADY_WINDOW`], from the
/// contenders' own counters.
async fn steady_statements(group: &Group) -> Result<f64> {
    let start = monotonic_ns();
    tokio::time::sleep(STEADY_WINDOW).await;
    let end = monotonic_ns();
    let mut rates = Vec::new();
    for member in group.members() {
        let stats: Vec<(i64, u64)> = group
            .records(&member)?
            .into_iter()
            .filter(|r| r.event == "stats")
            .filter_map(|r| Some((r.mono_ns, r.statements?)))
            .collect();
        let first = stats.iter().find(|(at, _)| *at >= start);
        let last = stats.iter().rev().find(|(at, _)| *at <= end);
        let (Some(first), Some(last)) = (first, last) else {
            bail!("{member}: no statement counts in the window");
        };
        if last.0 <= first.0 {
            bail!("{member}: statement counts too sparse");
        }
        rates.push((last.1 - first.1) as f64 / ((last.0 - first.0) as f64 / 1e9));
    }
    if rates.len() != MEMBERS.len() {
        bail!(
            "expected {} members, measured {}",
            MEMBERS.len(),
            rates.len()
        );
    }
    eprintln!("statements/s by member: {rates:.3?}");
    Ok(rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Merges `lines` into the results file (same bench and backend replaced).
fn write_results(lines: &[Line]) -> Result<PathBuf> {
    let values: Vec<serde_json::Value> = lines.iter().map(Line::json).collect();
    merge_results("lease.jsonl", &values)
}

fn print_table(lines: &[Line]) {
    println!(
        "\n{:<28} {:<9} {:>5} {:>9} {:>9} {:>9}",
        "bench", "backend", "runs", "p50 ms", "p99 ms", "max ms"
    );
    for line in lines {
        match line {
            Line::Takeover {
                bench,
                backend,
                samples,
            } => {
                let (p50, p99, max) = percentiles(samples);
                println!(
                    "{bench:<28} {backend:<9} {:>5} {p50:>9.1} {p99:>9.1} {max:>9.1}",
                    samples.len()
                );
            }
            Line::Statements {
                backend,
                per_member,
            } => println!(
                "{:<28} {backend:<9} {:>5} {:>29}",
                "lease_statements_per_s",
                "",
                format!("{per_member:.3} per member")
            ),
        }
    }
}
