//! joc-ha-sidecar: the second container of every JOC Cockpit member pod.

use std::process::ExitCode;

use clap::Parser;
use joc_ha_sidecar::config::{Config, Flags, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_flags(Flags::parse()) {
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}
