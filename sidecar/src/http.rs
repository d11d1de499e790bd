//! The sidecar's HTTP servers, two listeners:
//!
//! - the pod port (`JOC_HA_HTTP_ADDR`, 0.0.0.0:9086): `/healthz`, `/readyz`
//!   and `/metrics`, for the kubelet's probes and Prometheus; every other
//!   path is 404 there;
//! - loopback only (`JOC_HA_LOCAL_ADDR`, 127.0.0.1:9087): `GET /role` for the
//!   cockpit container and `GET /prestop`, which the cockpit's preStop hook
//!   (`joc-ha-sidecar prestop`, an `exec` in the cockpit container) calls so
//!   that JOC stops only after the lease (and the Service) moved.
//!
//! Anyone on the pod network can reach the pod port, so nothing that steps
//! a member down or tells its role is served there (README "What joc-ha
//! refuses, and why", case 1). `/prestop` triggers nothing by itself even so:
//! the hand-over is started by the pod's deletion (a deletionTimestamp) or
//! SIGTERM, and `/prestop` waits, bounded, until it is done (see
//! `crate::decide::pod`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::encode;
use crate::role::{RoleReport, monotonic_now_ns};

/// Liveness and readiness facts the main loop keeps up to date.
#[derive(Default)]
pub struct Health {
    /// CLOCK_MONOTONIC ns of the main loop's last turn.
    pub loop_seen_ns: AtomicU64,
    /// The last lease statement succeeded (database reachable, heartbeat fresh).
    pub database_ok: AtomicBool,
    /// js7 mode: this member's JOC instance has no fresh heartbeat, so it
    /// may not take or receive the lease.
    pub joc_not_ready: AtomicBool,
}

impl Health {
    pub fn loop_alive(&self) {
        self.loop_seen_ns
            .store(monotonic_now_ns(), Ordering::Relaxed);
    }
}

/// The longest `/prestop` waits for a hand-over, within the pod's 60 s
/// grace period (JOC's own shutdown needs the rest).
pub const PRESTOP_LIMIT_MAX: Duration = Duration::from_secs(50);

/// The preStop hook's wait, answered once the sidecar has looked at its pod
/// and, if the pod is being deleted, handed over.
pub type PrestopRequest = oneshot::Sender<()>;

#[derive(Clone)]
struct AppState {
    role: watch::Receiver<RoleReport>,
    registry: Arc<Registry>,
    health: Arc<Health>,
    prestop: mpsc::Sender<PrestopRequest>,
    /// How long the main loop may stay silent before /healthz fails.
    stall_limit: Duration,
    /// How long /prestop waits for the hand-over.
    prestop_limit: Duration,
}

pub struct Server {
    /// The pod port: probes and metrics.
    pub addr: SocketAddr,
    /// Loopback: `/role` and `/prestop`.
    pub local_addr: SocketAddr,
    pub role: watch::Receiver<RoleReport>,
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub prestop: mpsc::Sender<PrestopRequest>,
    pub stall_limit: Duration,
    pub prestop_limit: Duration,
}

/// The addresses both listeners were bound to.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub public: SocketAddr,
    pub local: SocketAddr,
}

/// A listener that could not be bound; names the setting to change.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve HTTP on {addr}: {source}; choose another {setting}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub setting: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl Server {
    /// Binds both addresses now (so a port in use is a start-up error) and
    /// serves in the background.
    pub async fn start(self) -> Result<Bound, BindError> {
        let bind = |addr: SocketAddr, setting: &'static str| async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| BindError {
                    addr,
                    setting,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| BindError {
                addr,
                setting,
                source,
            })?;
            Ok::<_, BindError>((listener, bound))
        };
        let (public, public_addr) =
            bind(self.addr, joc_ha_crds::names::sidecar_env::HTTP_ADDR).await?;
        let (local, local_addr) =
            bind(self.local_addr, joc_ha_crds::names::sidecar_env::LOCAL_ADDR).await?;
        let state = AppState {
            role: self.role,
            registry: self.registry,
            health: self.health,
            prestop: self.prestop,
            stall_limit: self.stall_limit,
            prestop_limit: self.prestop_limit,
        };
        serve(public, public_router().with_state(state.clone()));
        serve(local, local_router().with_state(state));
        Ok(Bound {
            public: public_addr,
            local: local_addr,
        })
    }
}

/// The pod port's routes; axum answers 404 for any other path.
fn public_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The loopback listener's routes.
fn local_router() -> Router<AppState> {
    Router::new()
        .route("/role", get(role))
        .route("/prestop", get(prestop))
}

fn serve(listener: tokio::net::TcpListener, app: Router) {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
}

async fn role(State(state): State<AppState>) -> Json<RoleReport> {
    Json(state.role.borrow().clone())
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let seen = state.health.loop_seen_ns.load(Ordering::Relaxed);
    let silent = Duration::from_nanos(monotonic_now_ns().saturating_sub(seen));
    if silent <= state.stall_limit {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("main loop silent for {silent:?}"),
        )
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.health.database_ok.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the lease database is not reachable or the heartbeat is stale",
        )
    } else if state.health.joc_not_ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "this member's JOC instance has no fresh heartbeat in JOC_INSTANCES from the JOC process now running",
        )
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode(&state.registry),
    )
}

async fn prestop(State(state): State<AppState>) -> impl IntoResponse {
    let (done_tx, done_rx) = oneshot::channel();
    if state.prestop.send(done_tx).await.is_err() {
        return (StatusCode::OK, "sidecar is stopping");
    }
    match tokio::time::timeout(state.prestop_limit, done_rx).await {
        Ok(_) => (StatusCode::OK, "handed over"),
        Err(_) => (
            StatusCode::OK,
            "hand-over still running; continuing shutdown",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::get;

    fn server(addr: SocketAddr, local_addr: SocketAddr) -> Server {
        let (_, role) = watch::channel(RoleReport::standby("joc-0", "joc"));
        let (prestop, _) = mpsc::channel(1);
        let health = Arc::new(Health::default());
        health.loop_alive();
        health.database_ok.store(true, Ordering::Relaxed);
        Server {
            addr,
            local_addr,
            role,
            registry: Arc::new(Registry::default()),
            health,
            prestop,
            stall_limit: Duration::from_secs(60),
            prestop_limit: Duration::from_secs(1),
        }
    }

    fn any_loopback_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn the_pod_port_serves_only_probes_and_metrics() {
        let bound = server(any_loopback_port(), any_loopback_port())
            .start()
            .await
            .expect("binds");
        let cases: &[(SocketAddr, &str, u16)] = &[
            (bound.public, "/healthz", 200),
            (bound.public, "/readyz", 200),
            (bound.public, "/metrics", 200),
            (bound.public, "/prestop", 404),
            (bound.public, "/role", 404),
            (bound.public, "/", 404),
            (bound.local, "/role", 200),
            (bound.local, "/metrics", 404),
            (bound.local, "/healthz", 404),
        ];
        for (addr, path, want) in cases {
            let (code, _) = get(*addr, path).await.expect("answers");
            assert_eq!(code, *want, "GET {path} on {addr}");
        }
    }

    #[tokio::test]
    async fn a_port_in_use_names_the_setting() {
        let taken = std::net::TcpListener::bind(any_loopback_port()).expect("bind");
        let in_use = taken.local_addr().expect("addr");
        let error = server(any_loopback_port(), in_use)
            .start()
            .await
            .expect_err("in use");
        assert_eq!(error.setting, "JOC_HA_LOCAL_ADDR");
        assert!(error.to_string().contains("JOC_HA_LOCAL_ADDR"), "{error}");
        let error = server(in_use, any_loopback_port())
            .start()
            .await
            .expect_err("in use");
        assert_eq!(error.setting, "JOC_HA_HTTP_ADDR");
    }
}
