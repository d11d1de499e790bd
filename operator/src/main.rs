//! joc-ha-operator: turns JocCluster resources into running JOC Cockpit
//! clusters. Several replicas may run; a Kubernetes Lease elects the one that
//! reconciles.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use joc_ha_operator::build::BuildContext;
use joc_ha_operator::controller::{self, Context};
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "joc-ha-operator",
    version,
    about = "Deploys and heals JOC Cockpit clusters described by JocCluster resources"
)]
struct Flags {
    /// Print the JocCluster CRD as YAML and exit.
    #[arg(long)]
    print_crd: bool,
    /// Sidecar image used when a JocCluster names none.
    #[arg(long, env = "JOC_HA_SIDECAR_IMAGE", default_value = concat!("ghcr.io/joc-ha/joc-ha-sidecar:", env!("CARGO_PKG_VERSION")))]
    sidecar_image: String,
    /// This replica's identity in the leader election (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "joc-ha-operator-local")]
    identity: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "JOC_HA_LEADER_LEASE", default_value = "joc-ha-operator")]
    lease_name: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "JOC_HA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: String,
    /// Log format: plain or json.
    #[arg(long, env = "JOC_HA_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    if flags.print_crd {
        return match joc_ha_crds::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("joc-ha-operator: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(&flags.log_format);
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: in a container log they are escape-code noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(flags: Flags) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API: {e} (set KUBECONFIG or run in a pod)")
    })?;

    let http_addr: std::net::SocketAddr = flags.http_addr.parse().map_err(|_| {
        format!(
            "JOC_HA_HTTP_ADDR {:?} is not an address such as 0.0.0.0:8080",
            flags.http_addr
        )
    })?;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| format!("cannot listen on {http_addr}: {e}"))?;
    let (metrics, registry) = joc_ha_operator::metrics::Metrics::new();
    let registry = Arc::new(registry);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Every replica is ready: followers are hot standbys.
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let text = joc_ha_operator::metrics::encode(&registry);
                async move { text }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "HTTP server stopped");
        }
    });

    // Leader election: 15 s lease, as client-go's default.
    let manager = LeaseManagerBuilder::new(client.clone(), &flags.lease_name)
        .with_namespace(&flags.lease_namespace)
        .with_identity(&flags.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| format!("cannot set up leader election: {e}"))?;
    let (mut is_leader, lease_task) = manager.watch().await;
    info!(identity = %flags.identity, lease = %flags.lease_name, "waiting for leadership");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        if *is_leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = is_leader.changed() => {
                if changed.is_err() {
                    return Err("leader election stopped".to_owned());
                }
            }
            () = &mut shutdown => {
                info!("shutting down before leading");
                return Ok(());
            }
        }
    }
    metrics.leader.set(1);
    info!("leading: reconciling JocClusters");

    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "joc-ha-operator".into(),
            instance: Some(flags.identity.clone()),
        },
        BuildContext {
            sidecar_image: flags.sidecar_image.clone(),
        },
        metrics,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures::future::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let controller_task = tokio::spawn(controller::run(ctx, stop));

    let lost_leadership = async {
        while is_leader.changed().await.is_ok() {
            if !*is_leader.borrow() {
                return;
            }
        }
    };
    let exit = tokio::select! {
        () = lost_leadership => Err("lost leadership; exiting so that a restart rejoins as follower".to_owned()),
        () = &mut shutdown => Ok(()),
    };
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(20), controller_task)
        .await
        .is_err()
    {
        warn!("controller did not stop within 20 s");
    }
    // Dropping the receiver ends the lease task, which releases the Lease.
    drop(is_leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(manager))) => {
            if let Err(e) = manager.release().await {
                warn!(error = %e, "could not release the leader Lease");
            }
        }
        _ => warn!("leader election task did not end cleanly"),
    }
    exit
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received"),
    }
}
