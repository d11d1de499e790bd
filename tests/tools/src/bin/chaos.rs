//! `make chaos`: the randomized fault campaign on PostgreSQL and MariaDB
//! (see `joc_ha_tools::chaos`). Writes `target/joc-ha-chaos/<backend>.json`
//! (`<backend>-js7.json` with `--workload js7`, `make chaos-js7`) under the
//! repository root and prints a table; exits non-zero when any checker found
//! something or a fault did not recover.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use joc_ha_tests::db::Backend;
use joc_ha_tools::chaos::{ChaosConfig, FaultKind, Workload, run};

#[derive(Parser, Debug)]
#[command(about = "Randomized fault campaign on a 3-member JocCluster")]
struct Args {
    /// Seed of the random faults (printed; random if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults per backend (default: 300, with `--workload js7` 100).
    #[arg(long)]
    faults: Option<usize>,
    /// `postgres`, `mariadb` or `all`.
    #[arg(long, default_value = "all")]
    backend: String,
    /// No new fault after this many minutes (per backend).
    #[arg(long, default_value_t = 60)]
    max_minutes: u64,
    /// Seconds the `database-down` fault keeps the database down.
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// Only these kinds, comma-separated (e.g. `kill-active,cut-active`).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// `generic` (stand-in cockpits and the Controller's history) or `js7`
    /// (JOC stand-ins: JOC's own election, service periods, switch requests).
    #[arg(long, default_value = "generic")]
    workload: String,
    /// js7: fail the campaign when two JOC instances ran services at once
    /// (without it they are counted and reported).
    #[arg(long)]
    strict_services: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let backends = match args.backend.as_str() {
        "all" => vec![Backend::Postgres, Backend::MariaDb],
        name => match Backend::from_name(name) {
            Some(Backend::Sqlite) | None => bail!("--backend: postgres, mariadb or all"),
            Some(backend) => vec![backend],
        },
    };
    let workload = Workload::from_name(&args.workload)
        .with_context(|| format!("--workload {}: generic or js7", args.workload))?;
    if args.strict_services && workload != Workload::Js7 {
        bail!("--strict-services judges JOC's service periods: only with --workload js7");
    }
    let kinds = if args.kinds.is_empty() {
        match workload {
            Workload::Generic => FaultKind::ALL.to_vec(),
            Workload::Js7 => FaultKind::JS7.to_vec(),
        }
    } else {
        args.kinds
            .iter()
            .map(|k| FaultKind::from_name(k).with_context(|| format!("unknown fault kind {k}")))
            .collect::<Result<Vec<_>>>()?
    };
    let seed = args.seed.unwrap_or_else(rand::random::<u64>);
    println!("chaos seed {seed} (replay with CHAOS_ARGS=\"--seed {seed}\")");
    let mut clean = true;
    for backend in backends {
        let mut config = match workload {
            Workload::Generic => ChaosConfig::new(backend, seed),
            Workload::Js7 => ChaosConfig::js7(backend, seed),
        };
        config.strict_services = args.strict_services;
        config.faults = args.faults.unwrap_or(match workload {
            Workload::Generic => 300,
            Workload::Js7 => 100,
        });
        config.max_duration = Duration::from_secs(args.max_minutes * 60);
        config.outage = Duration::from_secs(args.outage_secs);
        config.kinds = kinds.clone();
        let report = run(&config).await?;
        clean &= report.is_clean();
    }
    if !clean {
        bail!("the fault campaign found violations (see the reports)");
    }
    Ok(())
}
