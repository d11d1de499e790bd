//! joc-ha-sidecar: the second container of every JOC Cockpit member pod.

use std::process::ExitCode;

use clap::Parser;
use joc_ha_sidecar::config::{
    Command, Config, Flags, LogFormat, claim_identity, database_from_flags,
};
use joc_ha_sidecar::hook::{HookCli, HookCommand};

#[tokio::main]
async fn main() -> ExitCode {
    if HookCli::is_hook_command(std::env::args().nth(1).as_deref()) {
        return match HookCli::parse().command {
            HookCommand::Prestop { local_addr } => prestop(&local_addr).await,
            HookCommand::InstallHook { dir } => install_hook(&dir),
        };
    }
    let flags = Flags::parse();
    if let Some(Command::RenderJocConfig(args)) = &flags.command {
        if args.claim_database
            && let Err(error) = claim_database(&flags).await
        {
            // JOC must not start on a database another cluster owns: the
            // pod stays in Init with this message in the container's log.
            eprintln!("joc-ha-sidecar: JOC is not started: {error}");
            return ExitCode::from(3);
        }
        return render_joc_config(&flags, args);
    }
    let config = match Config::from_flags(flags) {
        Ok(config) => config,
        Err(error) => {
            // One line naming the setting; nothing else starts.
            eprintln!("joc-ha-sidecar: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    tracing::info!(
        pod = %config.pod_name,
        namespace = %config.namespace,
        cluster = %config.cluster,
        database = %config.redacted_database_url(),
        ttl = ?config.lease_ttl,
        renew_interval = ?config.renew_interval,
        "starting"
    );
    match joc_ha_sidecar::supervisor::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The cockpit's preStop hook: waits for the sidecar's hand-over. Never
/// blocks JOC's stop for good: every failure is one stderr line and a
/// non-zero exit, after which the kubelet stops JOC anyway.
async fn prestop(local_addr: &str) -> ExitCode {
    let addr = match joc_ha_sidecar::config::parse_local_addr(local_addr) {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("joc-ha-sidecar prestop: {error}");
            return ExitCode::from(2);
        }
    };
    match joc_ha_sidecar::hook::prestop(addr, joc_ha_sidecar::hook::CLIENT_TIMEOUT).await {
        Ok(answer) => {
            println!("joc-ha-sidecar prestop: {answer}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("joc-ha-sidecar prestop: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The `joc-ha-hook` init container.
fn install_hook(dir: &std::path::Path) -> ExitCode {
    match joc_ha_sidecar::hook::install(dir) {
        Ok(to) => {
            println!(
                "joc-ha-sidecar: installed the cockpit's preStop hook as {}",
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("joc-ha-sidecar install-hook: {error}");
            ExitCode::from(2)
        }
    }
}

/// js7: claims the database for this JocCluster, or says who owns it.
async fn claim_database(flags: &Flags) -> Result<(), String> {
    let (cluster_id, member) = claim_identity(flags).map_err(|e| e.to_string())?;
    let (url, _) = database_from_flags(flags).map_err(|e| e.to_string())?;
    joc_ha_sidecar::lease::claim_database(&cluster_id, &member, &url)
        .await
        .map_err(|e| e.to_string())?;
    println!("joc-ha-sidecar: the database belongs to JocCluster {cluster_id}");
    Ok(())
}

/// The js7 init container: JOC's configuration files, then exit.
fn render_joc_config(flags: &Flags, args: &joc_ha_sidecar::config::RenderArgs) -> ExitCode {
    let result = database_from_flags(flags)
        .map_err(|e| e.to_string())
        .and_then(|(url, kind)| {
            joc_ha_sidecar::js7::render_joc_config(&url, kind, flags, args)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => {
            println!(
                "joc-ha-sidecar: wrote hibernate.cfg.xml and joc.properties to {}",
                args.out_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("joc-ha-sidecar: {error}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}
