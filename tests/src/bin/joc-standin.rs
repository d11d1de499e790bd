//! joc-standin: a stand-in for one JOC Cockpit instance's cluster service
//! (JOC_CLUSTER / JOC_INSTANCES), following SOS's `JocCluster`,
//! `JocClusterService` and `ClusterResourceImpl` (see `joc_ha_tests::joc` and
//! /work/js7-facts.md). Its "services" are a flag, a log line and an optional
//! periods file; they run iff JOC_CLUSTER.MEMBER_ID is this member after a poll.
//!
//! Reads `--resources-dir` like JOC (joc.properties + hibernate.cfg.xml, with
//! `${JS7_DBMS_USER}`, `${JS7_DBMS_PASSWORD}`, `${JS7_DBMS_URL_PARAMETER}` from
//! the environment). Serves `GET /`, `GET /health` and
//! `POST /joc/api/joc/cluster/switch_member` (no authentication in the
//! stand-in; JOC requires an X-Access-Token with the cluster "manage" permission).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use clap::Parser;
use joc_ha_tests::joc::{self, Member, MemberConfig, Services, SwitchError};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "joc-standin",
    about = "Stand-in for JOC Cockpit's cluster service"
)]
struct Args {
    /// Folder with joc.properties and hibernate.cfg.xml (JETTY_BASE/resources/joc).
    #[arg(long)]
    resources_dir: PathBuf,
    /// The data directory whose path is hashed into the member id (JOC: user.dir).
    /// Default: the current directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hostname for the member id (default: env HOSTNAME, else the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// HTTP listen address, e.g. 127.0.0.1:4446.
    #[arg(long)]
    http_addr: Option<String>,
    /// JOC_INSTANCES.URI (default: http://<http-addr>).
    #[arg(long)]
    uri: Option<String>,
    /// Append a JSON line per services start/stop (CLOCK_MONOTONIC ns).
    #[arg(long)]
    periods_file: Option<PathBuf>,
    /// Do not create JOC_CLUSTER/JOC_INSTANCES (JOC's installer does that).
    #[arg(long)]
    no_create_schema: bool,
}

struct Shared {
    member: tokio::sync::Mutex<Member>,
    /// What `GET /` answers, without waiting for a poll in progress.
    status: std::sync::Mutex<Value>,
}

impl Shared {
    fn refresh_status(&self, member: &Member) {
        if let Ok(mut status) = self.status.lock() {
            status["active"] = member.services_active().into();
        }
    }
}

fn hostname(flag: Option<String>) -> String {
    // SOSShell.getLocalHostName: env HOSTNAME if non-empty, else the host's name, else "unknown".
    if let Some(h) = flag.filter(|h| !h.is_empty()) {
        return h;
    }
    if let Some(h) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        return h;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_target(false)
        .with_ansi(false)
        .init();
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            tracing::error!("joc-standin: {error:#}");
            std::process::exit(2);
        }
    }
}

async fn run() -> Result<i32> {
    let args = Args::parse();
    let (properties, url) = joc::read_resources(&args.resources_dir, |k| std::env::var(k).ok())?;
    let hostname = hostname(args.hostname);
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => joc::default_data_dir()?,
    };
    let data_dir = data_dir
        .to_str()
        .context("--data-dir is not valid UTF-8")?
        .to_owned();
    let uri = args
        .uri
        .or_else(|| args.http_addr.as_ref().map(|a| format!("http://{a}")));
    let config = MemberConfig::new(&hostname, &data_dir, properties.clone(), uri);
    let member_id = config.member_id.clone();
    tracing::info!(
        "[start][hostname={hostname}][memberId={member_id}][dataDirectory={}][clusterId={}][apiServer={}][pollingInterval={}s][heartBeatExceededInterval={}s][db={}]",
        config.data_directory,
        properties.cluster_id,
        config.api_server(),
        properties.polling_interval_s,
        properties.heart_beat_exceeded_interval_s,
        joc::redact_url(&url)
    );
    let services = Services::new(&member_id, args.periods_file.as_deref())?;
    let api_server = config.api_server();
    let member = Member::new(config, &url, services)?;
    let shared = Arc::new(Shared {
        member: tokio::sync::Mutex::new(member),
        status: std::sync::Mutex::new(json!({
            "member": hostname,
            "memberId": member_id,
            "active": false,
            "apiServer": api_server,
        })),
    });
    // The web server answers from the start, like JOC's (the cluster service
    // starts behind it).
    if let Some(addr) = &args.http_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let app = router(shared.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!("[http] server stopped: {error}");
            }
        });
    }

    // Start-up: (our installer step: the tables), register the instance,
    // delete a row left from a previous run. On a database error, retry after
    // pollingWaitIntervalOnError (ours: JOC's start-up retry was not looked up).
    let (poll, wait_on_error) = joc::polling(&properties);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let attempt = async {
            if !args.no_create_schema {
                joc::create_schema(&url).await?;
            }
            shared.member.lock().await.start().await
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(0),
            started = attempt => match started {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!("[start][db error, retrying in {wait_on_error:?}]{error:#}");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(0),
                        _ = tokio::time::sleep(wait_on_error) => {}
                    }
                }
            }
        }
    }

    // JocCluster.doProcessing: process, then wait pollingInterval (on error
    // pollingWaitIntervalOnError).
    loop {
        let round = async {
            let result = {
                let mut member = shared.member.lock().await;
                let result = member.process().await;
                shared.refresh_status(&member);
                result
            };
            let wait = match result {
                Ok(()) => poll,
                Err(error) => {
                    tracing::warn!("[poll][db error]{error:#}");
                    wait_on_error
                }
            };
            tokio::time::sleep(wait).await;
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = round => {}
        }
    }

    tracing::info!("[shutdown]");
    let mut member = shared.member.lock().await;
    let result = tokio::time::timeout(Duration::from_secs(10), member.shutdown()).await;
    shared.refresh_status(&member);
    match result {
        Ok(Ok(deleted)) => {
            tracing::info!("[shutdown][deleted own JOC_CLUSTER row: {}]", deleted > 0);
            Ok(0)
        }
        Ok(Err(error)) => {
            tracing::error!("[shutdown][could not delete own JOC_CLUSTER row]{error:#}");
            Ok(1)
        }
        Err(_) => {
            tracing::error!("[shutdown][deleting own JOC_CLUSTER row timed out]");
            Ok(1)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!("cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::{get, post};
    let root = shared.clone();
    axum::Router::new()
        .route(
            "/",
            get(move || {
                let body = root.status.lock().map(|s| s.clone()).unwrap_or_default();
                async move { axum::Json(body) }
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/joc/api/joc/cluster/switch_member",
            post(move |body: axum::body::Bytes| switch_member(shared.clone(), body)),
        )
}

fn delivery_date() -> String {
    jiff::Timestamp::now().to_string()
}

/// JOC's error answer (`JOCDefaultResponse.responseStatusJSError` →
/// `responseStatus420`, sos-joc, tool id 47219513439): HTTP 420, body `Err420`
/// `{"error": {"code", "message"}, "surveyDate", "deliveryDate"}`. For a
/// `JocException` the message is `getErrorMessage(e)` = `"<ExceptionClass>: " + message`;
/// `ClusterResourceImpl` throws `JocServiceException`. The code "JOC-420" is ours
/// (JocServiceException's error code was not looked up).
fn refusal(message: &str) -> (StatusCode, axum::Json<Value>) {
    let status = StatusCode::from_u16(420).unwrap_or(StatusCode::BAD_REQUEST);
    let now = delivery_date();
    (
        status,
        axum::Json(json!({
            "error": {"code": "JOC-420", "message": message},
            "surveyDate": now,
            "deliveryDate": now,
        })),
    )
}

async fn switch_member(
    shared: Arc<Shared>,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    // Body: ClusterSwitchMember {"memberId": "...", "auditLog": {...}}.
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(error) => return refusal(&format!("invalid JSON body: {error}")),
    };
    let target = parsed
        .get("memberId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    tracing::info!("[switch_member][request][memberId={target:?}]");
    let mut member = shared.member.lock().await;
    let result = member.switch_member(target.as_deref()).await;
    shared.refresh_status(&member);
    drop(member);
    match result {
        Ok(state) => (
            StatusCode::OK,
            axum::Json(json!({
                "type": "cluster",
                "state": state.name(),
                "deliveryDate": delivery_date(),
            })),
        ),
        Err(SwitchError::Refused(message)) => {
            tracing::info!("[switch_member][refused]{message}");
            refusal(&format!("JocServiceException: {message}"))
        }
        Err(SwitchError::Database(error)) => {
            tracing::warn!("[switch_member][db error]{error:#}");
            refusal(&format!("{error:#}"))
        }
    }
}
