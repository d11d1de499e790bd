//! js7 agreement benchmark: time from a fault to the moment the lease
//! holder, the `active` label, the active Service's endpoint and JOC's own
//! active member (`JOC_CLUSTER.MEMBER_ID`) name one pod again, on the stack
//! with JOC stand-ins. Faults, in turn: the active pod's processes crash
//! (fail-over), a switch-over annotation to a standby, JOC hangs inside the
//! active pod (SIGSTOP of the JOC stand-in until agreement).
//!
//! Run for JOC's timings as the operator sets them (fitted to the lease) and
//! for JOC's defaults (30 s poll, 60 s timeout). Writes
//! `{"bench":"js7_agreement",...}` lines into
//! `<repository>/target/joc-ha-bench/stack.jsonl` and prints a table.
//!
//!   bench-js7 [--runs 20] [--backends postgres,mariadb] [--timings operator,joc-default]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use joc_ha_tests::agreement::{Agreement, kill_pod_processes, wait_agreement};
use joc_ha_tests::bench::{merge_results, percentiles, round1};
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Failover,
    Switchover,
    JocHang,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::Failover, Fault::Switchover, Fault::JocHang];

    fn name(self) -> &'static str {
        match self {
            Fault::Failover => "failover",
            Fault::Switchover => "switchover",
            Fault::JocHang => "joc_hang",
        }
    }
}

struct Timings {
    name: &'static str,
    /// (pollingInterval, heartBeatExceededInterval) for the JocCluster; None: fitted.
    spec: Option<(&'static str, &'static str)>,
    poll_s: u64,
    exceeded_s: u64,
}

fn timings(name: &str) -> Result<Timings> {
    Ok(match name {
        "operator" => Timings {
            name: "operator",
            spec: None,
            poll_s: 1,
            exceeded_s: 5,
        },
        "joc-default" => Timings {
            name: "joc-default",
            spec: Some(("30s", "60s")),
            poll_s: 30,
            exceeded_s: 60,
        },
        other => bail!("unknown timings {other:?}: operator or joc-default"),
    })
}

struct Args {
    runs: usize,
    backends: Vec<Backend>,
    timings: Vec<Timings>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        runs: 20,
        backends: vec![Backend::Postgres, Backend::MariaDb],
        timings: vec![timings("operator")?, timings("joc-default")?],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => args.runs = value.parse().context("--runs")?,
            "--backends" => {
                args.backends = value
                    .split(',')
                    .map(|b| match b {
                        "postgres" => Ok(Backend::Postgres),
                        "mariadb" => Ok(Backend::MariaDb),
                        other => bail!("unknown backend {other:?}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--timings" => args.timings = value.split(',').map(timings).collect::<Result<_>>()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// One fault and the wait for agreement under a new lease term (after a
/// crash JOC may elect the restarted pod again; the lease follows it).
async fn one_run(
    stack: &Stack,
    fault: Fault,
    before: &Agreement,
    bound: Duration,
) -> Result<Agreement> {
    let active = before.pod.as_str();
    let after = Some(before.term);
    Ok(match fault {
        Fault::Failover => {
            kill_pod_processes(stack, active).await?;
            wait_agreement(stack, after, bound).await?
        }
        Fault::Switchover => {
            let target = stack
                .member_names()
                .into_iter()
                .find(|m| m != active)
                .context("a standby")?;
            stack.annotate_switchover(&target).await?;
            wait_agreement(stack, after, bound).await?
        }
        Fault::JocHang => {
            let joc = stack.cockpit(active).context("JOC process")?;
            joc.freeze()?;
            let outcome = wait_agreement(stack, after, bound).await;
            joc.thaw()?;
            outcome?
        }
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let mut lines = Vec::new();
    let mut table = Vec::new();
    for backend in &args.backends {
        for timing in &args.timings {
            let stack = Stack::start(StackOptions {
                backend: *backend,
                joc_timings: timing.spec.map(|(p, e)| (p.to_owned(), e.to_owned())),
                ..StackOptions::default()
            })
            .await?;
            let up = Duration::from_secs(180 + 3 * timing.exceeded_s);
            stack.wait_members_ready(up).await?;
            let mut agreed = wait_agreement(&stack, None, up).await?;
            // A switch needs up to two polls; a hang the timeout and a poll.
            let bound = Duration::from_secs(60 + 3 * timing.poll_s + 2 * timing.exceeded_s);
            let mut samples: Vec<(Fault, f64)> = Vec::new();
            for run in 0..args.runs {
                let fault = Fault::ALL[run % Fault::ALL.len()];
                let next = one_run(&stack, fault, &agreed, bound)
                    .await
                    .with_context(|| format!("run {run} ({})", fault.name()))?;
                let ms = next.took.as_secs_f64() * 1000.0;
                eprintln!(
                    "{} {} run {run:>2} {:<10} {} -> {}: {ms:.0} ms",
                    backend.name(),
                    timing.name,
                    fault.name(),
                    agreed.pod,
                    next.pod
                );
                samples.push((fault, ms));
                agreed = next;
                // Every member back and heartbeating before the next fault.
                stack.wait_members_ready(up).await?;
            }
            stack.endpoints.assert_never_two();
            let groups: Vec<(&str, Vec<f64>)> =
                std::iter::once(("all", samples.iter().map(|(_, ms)| *ms).collect::<Vec<_>>()))
                    .chain(Fault::ALL.iter().map(|f| {
                        (
                            f.name(),
                            samples
                                .iter()
                                .filter(|(g, _)| g == f)
                                .map(|(_, ms)| *ms)
                                .collect(),
                        )
                    }))
                    .collect();
            for (fault, values) in groups {
                let (p50, p99, max) = percentiles(&values);
                let line = json!({
                    "bench": "js7_agreement",
                    "backend": backend.name(),
                    "variant": format!("{}/{fault}", timing.name),
                    "joc_timings": timing.name,
                    "joc_polling_interval_s": timing.poll_s,
                    "joc_heart_beat_exceeded_interval_s": timing.exceeded_s,
                    "fault": fault,
                    "runs": values.len(),
                    "p50_ms": round1(p50),
                    "p99_ms": round1(p99),
                    "max_ms": round1(max),
                });
                println!("{line}");
                table.push(format!(
                    "| {} | {} ({} s / {} s) | {fault} | {} | {:.0} | {:.0} | {:.0} |",
                    backend.name(),
                    timing.name,
                    timing.poll_s,
                    timing.exceeded_s,
                    values.len(),
                    p50,
                    p99,
                    max
                ));
                lines.push(line);
            }
            // Written after each configuration, so a long run keeps its results.
            merge_results("stack.jsonl", &lines)?;
        }
    }
    let path = merge_results("stack.jsonl", &lines)?;
    println!(
        "\n| backend | JOC timings (poll / timeout) | fault | runs | p50 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    println!("\nwritten to {}", path.display());
    Ok(())
}
