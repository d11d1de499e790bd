//! The benchmarks' baseline: a role labeler built on the Kubernetes Lease API
//! the way most Kubernetes HA add-ons are, with client-go's default
//! leader-election timings. It runs in place of the joc-ha sidecar (same
//! env, same port) and does only the labelling: one
//! `coordination.k8s.io/v1` Lease per cluster (`<cluster>-baseline`); the
//! holder sets `joc-ha.dev/role=standby` on every other pod labeled active,
//! then `active` on its own pod; the others label themselves standby.
//!
//! Timings, mapped onto kube-lease-manager (the crate the operator uses for
//! its own election), which has a lease duration and a "grace" (renew that
//! long before expiry), and no retry period or renew deadline of its own:
//!
//! * client-go `LeaseDuration` 15 s → `with_duration(15)`.
//! * client-go `RetryPeriod` 2 s: the holder renews every 2 s → grace 13 s
//!   (renew 13 s before the 15 s run out, i.e. 2 s after the last renew).
//!   Candidates: client-go polls every 2–4.4 s (2 s with jitter 1.2) and takes
//!   the Lease once `observedTime + 15 s` passed; kube-lease-manager sleeps
//!   until the Lease's `renewTime + 15 s` and then takes it after a random
//!   0.1–1 s. Both take over 15–17 s after the last renew.
//! * client-go `RenewDeadline` 10 s (a holder that cannot renew for 10 s
//!   gives up): kube-lease-manager has none; it only matters for a holder
//!   cut off from the API server, which no benchmark case does.
//! * client-go's default `ReleaseOnCancel` is false; kube-lease-manager
//!   releases on shutdown, but standbys do not watch the Lease and still wait
//!   for the old expiry, so a deleted holder's successor comes as late as
//!   with client-go.
//!
//! HTTP on `JOC_HA_HTTP_ADDR` and `JOC_HA_LOCAL_ADDR` (where the cockpit's
//! preStop hook, `joc-ha-sidecar prestop`, calls): `/healthz`, `/readyz`
//! (always ok) and `/prestop`: label this pod standby and release the
//! Lease, as on SIGTERM.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::routing::get;
use joc_ha_crds::names::{
    COMPONENT_MEMBER, LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE, ROLE_ACTIVE, ROLE_STANDBY,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{mpsc, oneshot};

/// client-go's default LeaseDuration.
const LEASE_DURATION_S: u64 = 15;
/// client-go's default RetryPeriod: how often the holder renews.
const RETRY_PERIOD_S: u64 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baseline-labeler: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baseline-labeler: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

async fn label(pods: &Api<Pod>, pod: &str, role: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"labels": {LABEL_ROLE: role}}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("label {pod} {role}"))?;
    Ok(())
}

/// Sets `role` on this pod, after stripping other pods' active label when
/// `role` is active. Errors are logged: the next change retries.
async fn apply_role(pods: &Api<Pod>, cluster: &str, me: &str, role: &str) {
    let result = async {
        if role == ROLE_ACTIVE {
            let selector = format!(
                "{LABEL_CLUSTER}={cluster},{LABEL_COMPONENT}={COMPONENT_MEMBER},{LABEL_ROLE}={ROLE_ACTIVE}"
            );
            for pod in pods.list(&ListParams::default().labels(&selector)).await? {
                if pod.name_any() != me {
                    label(pods, &pod.name_any(), ROLE_STANDBY).await?;
                }
            }
        }
        label(pods, me, role).await
    }
    .await;
    match result {
        Ok(()) => tracing::info!(pod = me, role, "labeled"),
        Err(error) => tracing::warn!(%error, "labelling failed"),
    }
}

async fn run() -> Result<()> {
    let me = env("JOC_HA_POD_NAME")?;
    let namespace = env("JOC_HA_NAMESPACE")?;
    let cluster = env("JOC_HA_CLUSTER")?;
    let http_addr = std::env::var("JOC_HA_HTTP_ADDR").unwrap_or_else(|_| "0.0.0.0:9086".into());
    let client = Client::try_default().await.context("Kubernetes client")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let (prestop_tx, mut prestop_rx) = mpsc::channel::<oneshot::Sender<()>>(4);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/prestop",
            get(move || {
                let prestop = prestop_tx.clone();
                async move {
                    let (done_tx, done_rx) = oneshot::channel();
                    if prestop.send(done_tx).await.is_ok() {
                        let _ = done_rx.await;
                    }
                    "ok"
                }
            }),
        );
    // /prestop on the loopback address too, where the joc-ha sidecar
    // serves it and the cockpit's exec preStop hook calls.
    let local_addr = std::env::var("JOC_HA_LOCAL_ADDR").unwrap_or_else(|_| "127.0.0.1:9087".into());
    for addr in [&http_addr, &local_addr] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "HTTP server stopped");
            }
        });
    }

    apply_role(&pods, &cluster, &me, ROLE_STANDBY).await;
    let manager = LeaseManagerBuilder::new(client, format!("{cluster}-baseline"))
        .with_namespace(&namespace)
        .with_identity(&me)
        .with_duration(LEASE_DURATION_S)
        .with_grace(LEASE_DURATION_S - RETRY_PERIOD_S)
        .build()
        .await
        .context("set up the Lease")?;
    let (mut leader, lease_task) = manager.watch().await;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let mut answer_prestop = None;
    loop {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    break;
                }
                let role = if *leader.borrow_and_update() { ROLE_ACTIVE } else { ROLE_STANDBY };
                apply_role(&pods, &cluster, &me, role).await;
            }
            request = prestop_rx.recv() => {
                answer_prestop = request;
                break;
            }
            _ = term.recv() => break,
        }
    }
    // Stand by, then release the Lease (closing the channel ends the
    // manager's task, which releases it).
    apply_role(&pods, &cluster, &me, ROLE_STANDBY).await;
    drop(leader);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), lease_task).await;
    if let Some(done) = answer_prestop {
        let _ = done.send(());
        // The kubelet sends SIGTERM after the hook.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), term.recv()).await;
    }
    Ok(())
}
