//! Start-up: the HTTP server, the role lock, the lease elector, the caches
//! of the cluster's objects; then hands over to the runner
//! ([`crate::runner`]), which carries out what [`crate::decide`] decides.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::decide::{Settings, State};
use crate::http::{Health, PrestopRequest, Server};
use crate::js7::JocTables;
use crate::kubernetes::ClusterApi;
use crate::lease::{Elector, LeaseConfig, MemberKind};
use crate::metrics::Metrics;
use crate::role::RoleReport;
use crate::runner::{JocNotes, Runner};

/// Errors that stop the sidecar at start-up; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::KubeError),
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
}

/// Runs until SIGTERM (after stepping down) or a fatal start-up error.
pub async fn run(config: Config) -> Result<(), StartError> {
    let (metrics, registry) = Metrics::new(&config.namespace, &config.cluster, &config.pod_name);
    let client = crate::kubernetes::counting_client(metrics.kube_api_requests.clone()).await?;
    let api = ClusterApi::new(client, &config.namespace, &config.cluster, &config.pod_name);

    let health = Arc::new(Health::default());
    health.loop_alive();
    // js7: not ready until this member's JOC heartbeats.
    health
        .joc_not_ready
        .store(config.joc.is_some(), Ordering::Relaxed);
    let standby = RoleReport::standby(&config.pod_name, &config.cluster);
    // Held for this process's life: consumers stop the moment it dies.
    let _role_lock = config.role_dir.as_ref().and_then(|dir| {
        crate::role::claim(dir, &standby)
            .inspect_err(|error| warn!(%error, dir = %dir.display(), "cannot take the role lock"))
            .ok()
    });
    let (report_tx, report_rx) = watch::channel(standby.clone());
    let (prestop_tx, prestop_rx) = mpsc::channel::<PrestopRequest>(4);
    let bound = Server {
        addr: config.http_addr,
        local_addr: config.local_addr,
        role: report_rx,
        registry: Arc::new(registry),
        health: health.clone(),
        prestop: prestop_tx,
        stall_limit: config.lease_ttl * 2,
        prestop_limit: prestop_limit(&config),
    }
    .start()
    .await?;
    info!(public = %bound.public, local = %bound.local,
        "serving /healthz, /readyz, /metrics on the pod port; /role and /prestop (waits for a hand-over; triggers none) on loopback only");

    let mut lease = LeaseConfig::new(
        format!("{}/{}", config.namespace, config.cluster),
        config.pod_name.clone(),
    );
    lease.kind = MemberKind::Member;
    lease.ttl = config.lease_ttl;
    lease.renew_interval = config.renew_interval;
    // js7: a member is ready for the lease only once its JOC heartbeats.
    lease.ready = config.joc.is_none();
    // js7: JOC's tables are database-wide, one JocCluster per database.
    lease.exclusive = config.joc.is_some();
    let lease_validity = lease.validity();
    let joc = match &config.joc {
        Some(settings) => {
            let url = crate::lease::DatabaseUrl::parse(&config.database_url)?;
            info!(member_id = %settings.member_id, polling_interval = ?settings.polling_interval,
                heart_beat_exceeded_interval = ?settings.heart_beat_exceeded_interval,
                "js7 mode: keeping JOC's active member in agreement with the lease");
            Some(JocTables::new(&url, settings.heart_beat_exceeded_interval))
        }
        None => None,
    };
    let (elector, roles) = Elector::start(lease, &config.database_url)?;
    tokio::spawn(metrics.clone().track_renews(roles.clone()));
    let elector_status = elector.status();

    let pods_changed = Arc::new(Notify::new());
    let cluster_changed = Arc::new(Notify::new());
    let pods = reflect(
        api.pods().clone(),
        watcher::Config::default().labels(&api.cluster_selector()),
        pods_changed.clone(),
    );
    // This pod by name: seen even when a label the cluster's selector
    // needs is removed, and with its deletionTimestamp.
    let own_pod = reflect(
        api.pods().clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", config.pod_name)),
        pods_changed.clone(),
    );
    let clusters = reflect(
        api.clusters().clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", config.cluster)),
        cluster_changed.clone(),
    );

    let state = State::new(Settings {
        me: config.pod_name.clone(),
        cluster: config.cluster.clone(),
        lease_validity,
        lease_ttl: config.lease_ttl,
        renew_interval: config.renew_interval,
        joc: config.joc.clone(),
    });
    let joc_notes = JocNotes::start(api.clone());
    let mut runner = Runner {
        config,
        api,
        elector,
        roles,
        elector_status,
        pods,
        own_pod,
        clusters,
        metrics,
        health,
        report_tx,
        joc_tables: joc,
        state,
        last_database_error: None,
        last_login_event: None,
        last_renew_latency: None,
        database_owned: false,
        joc_notes,
        joc_container_left: Vec::new(),
    };
    runner.publish(standby);
    runner
        .main_loop(pods_changed, cluster_changed, prestop_rx)
        .await;
    Ok(())
}

/// Keeps a local cache of `api`'s objects and wakes `changed` on updates.
fn reflect<K>(api: kube::Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, config).default_backoff()).applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => changed.notify_one(),
                Err(error) => warn!(%error, "watch of the cluster's objects failed; retrying"),
            }
        }
    });
    reader
}

/// How long the cockpit's preStop hook may wait for the hand-over: twice
/// the TTL, and in js7 mode JOC's switch too (two polls), within the pod's
/// grace period.
fn prestop_limit(config: &Config) -> Duration {
    let joc = config.joc.as_ref().map_or(Duration::ZERO, |j| {
        j.polling_interval * 2 + config.renew_interval * 2
    });
    (config.lease_ttl * 2 + joc).min(crate::http::PRESTOP_LIMIT_MAX)
}
