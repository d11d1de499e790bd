//! The sidecar's main loop: turns lease roles into labels and role reports,
//! keeps hand-made label changes corrected, handles switch-over requests
//! and steps down on SIGTERM or the cockpit's preStop hook.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{ANNOTATION_SWITCHOVER_TO, ROLE_ACTIVE, ROLE_STANDBY, reason};
use joc_ha_crds::v1alpha1::{SwitchoverResult, SwitchoverStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::http::{Health, PrestopRequest, Server};
use crate::kubernetes::{ClusterApi, candidates, is_member, other_active_members, role_label};
use crate::lease::{
    Elector, ElectorHandle, ElectorStatus, HandOverOutcome, HandOverTarget, LeaseConfig,
    MemberKind, Role,
};
use crate::metrics::{Metrics, ResultLabel};
use crate::role::{RoleReport, write_role_file};
use crate::switchover::{Request, choose_target};

/// Errors that stop the sidecar at start-up; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::KubeError),
    #[error("cannot serve HTTP on {addr}: {source}; choose another JOC_HA_HTTP_ADDR")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
}

/// Runs until SIGTERM (after stepping down) or a fatal start-up error.
pub async fn run(config: Config) -> Result<(), StartError> {
    let client = Client::try_default()
        .await
        .map_err(crate::kubernetes::KubeError::Connect)?;
    let api = ClusterApi::new(client, &config.namespace, &config.cluster, &config.pod_name);

    let (metrics, registry) = Metrics::new(&config.namespace, &config.cluster, &config.pod_name);
    let health = Arc::new(Health::default());
    health.loop_alive();
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
        role: report_rx,
        registry: Arc::new(registry),
        health: health.clone(),
        prestop: prestop_tx,
        stall_limit: config.lease_ttl * 2,
        prestop_limit: config.lease_ttl * 2,
    }
    .start()
    .await
    .map_err(|source| StartError::Http {
        addr: config.http_addr,
        source,
    })?;
    info!(%bound, "serving /role, /healthz, /readyz, /metrics, /prestop");

    let mut lease = LeaseConfig::new(
        format!("{}/{}", config.namespace, config.cluster),
        config.pod_name.clone(),
    );
    lease.kind = MemberKind::Member;
    lease.ttl = config.lease_ttl;
    lease.renew_interval = config.renew_interval;
    let lease_validity = lease.validity();
    let (elector, roles) = Elector::start(lease, &config.database_url)?;
    let elector_status = elector.status();

    let pods_changed = Arc::new(Notify::new());
    let cluster_changed = Arc::new(Notify::new());
    let pods = reflect(
        api.pods().clone(),
        watcher::Config::default().labels(&api.cluster_selector()),
        pods_changed.clone(),
    );
    let clusters = reflect(
        api.clusters().clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", config.cluster)),
        cluster_changed.clone(),
    );

    let mut sidecar = Sidecar {
        config,
        api,
        elector,
        roles,
        pods,
        clusters,
        metrics,
        health,
        report_tx,
        elector_status,
        active_term: None,
        stepped_down: false,
        failsafe_until: None,
        lease_validity,
        last_database_error: None,
        last_renew_latency: None,
    };
    sidecar.publish(standby);
    sidecar
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

struct Sidecar {
    config: Config,
    api: ClusterApi,
    elector: ElectorHandle,
    roles: watch::Receiver<Role>,
    pods: Store<Pod>,
    clusters: Store<JocCluster>,
    metrics: Metrics,
    health: Arc<Health>,
    report_tx: watch::Sender<RoleReport>,
    elector_status: watch::Receiver<ElectorStatus>,
    /// The term we hold and have labeled for, while active.
    active_term: Option<i64>,
    /// After a preStop hand-over we never take the lease again.
    stepped_down: bool,
    /// Active in failsafe mode until then: the database is down for
    /// everyone, so nobody else can take the lease, and the API server shows
    /// no other active pod. Extended by each successful check of the API.
    failsafe_until: Option<tokio::time::Instant>,
    /// How long a renew lets the holder act (TTL − margin, from the lease).
    lease_validity: Duration,
    /// The elector's last error, to count each new one once.
    last_database_error: Option<String>,
    /// The last renew latency recorded in the histogram.
    last_renew_latency: Option<Duration>,
}

impl Sidecar {
    async fn main_loop(
        &mut self,
        pods_changed: Arc<Notify>,
        cluster_changed: Arc<Notify>,
        mut prestop: mpsc::Receiver<PrestopRequest>,
    ) {
        let mut sigterm =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    warn!(%error, "cannot listen for SIGTERM");
                    None
                }
            };
        let mut tick = tokio::time::interval(self.config.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.loop_alive();
            tokio::select! {
                changed = self.roles.changed() => {
                    if changed.is_err() {
                        warn!("the lease elector stopped; exiting");
                        self.demote("the lease elector stopped").await;
                        return;
                    }
                    self.follow_lease().await;
                }
                () = pods_changed.notified() => self.correct_labels().await,
                () = cluster_changed.notified() => self.handle_switchover().await,
                Some(done) = prestop.recv() => {
                    self.step_down("the cockpit container is stopping (preStop)").await;
                    let _ = done.send(());
                }
                Some(()) = recv_signal(&mut sigterm) => {
                    self.step_down("SIGTERM").await;
                    return;
                }
                _ = tick.tick() => {
                    self.follow_lease().await;
                    self.correct_labels().await;
                    self.handle_switchover().await;
                }
            }
        }
    }

    fn publish(&self, report: RoleReport) {
        if let Some(dir) = &self.config.role_dir
            && let Err(error) = write_role_file(dir, &report)
        {
            warn!(%error, dir = %dir.display(), "cannot write the role file");
        }
        let changed = self.report_tx.borrow().role != report.role;
        if changed && let Some(command) = &self.config.on_role_change {
            run_role_command(command, &report);
        }
        let _ = self.report_tx.send(report);
    }

    /// Applies the elector's current role.
    async fn follow_lease(&mut self) {
        let role = *self.roles.borrow_and_update();
        let (connected, error, renew_latency) = {
            let status = self.elector_status.borrow();
            (
                status.connected,
                status.last_error.as_ref().map(|e| e.to_string()),
                status.last_renew_latency,
            )
        };
        if let Some(latency) = renew_latency
            && Some(latency) != self.last_renew_latency
        {
            self.metrics.renew_latency.observe(latency.as_secs_f64());
            self.last_renew_latency = Some(latency);
        }
        self.health.database_ok.store(connected, Ordering::Relaxed);
        if error.is_some() && error != self.last_database_error {
            self.metrics.database_errors.inc();
        }
        self.last_database_error = error;
        let held = match role {
            Role::Active { term, until } if !self.stepped_down => {
                let remaining = until.saturating_duration_since(tokio::time::Instant::now());
                (!remaining.is_zero()).then_some((term, remaining))
            }
            _ => None,
        };
        match held {
            Some((term, remaining)) => {
                if self.failsafe_until.take().is_some() {
                    info!(term, "the database is back; failsafe mode ends");
                    if let Err(error) = self
                        .api
                        .set_role(&self.config.pod_name, ROLE_ACTIVE, Some(term))
                        .await
                    {
                        warn!(%error, "cannot clear the failsafe mark");
                    }
                    if self.active_term != Some(term) {
                        self.active_term = None;
                    }
                }
                if self.active_term != Some(term) {
                    self.promote(term).await;
                }
                self.publish(RoleReport::active(
                    &self.config.pod_name,
                    &self.config.cluster,
                    term,
                    remaining,
                ));
            }
            None => {
                let Some(term) = self.active_term else {
                    return;
                };
                if !self.stepped_down && self.database_trouble().await && self.failsafe(term).await
                {
                    return;
                }
                let why = if self.failsafe_until.is_some() {
                    "failsafe mode ended: cut off from the Kubernetes API too, or another member is active"
                } else if connected {
                    "the lease moved to another member"
                } else {
                    "the lease could not be renewed (database unreachable)"
                };
                self.demote(why).await;
            }
        }
    }

    /// Whether the elector lost the database (rather than the lease to
    /// another member). Its status may trail its role by a moment, so a
    /// demotion while still seeing ourselves as holder waits briefly for it.
    async fn database_trouble(&mut self) -> bool {
        let me = self.config.pod_name.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        loop {
            let (trouble, still_holder) = {
                let status = self.elector_status.borrow_and_update();
                let holder =
                    status.lease.as_ref().and_then(|l| l.holder.as_deref()) == Some(me.as_str());
                (!status.connected || status.last_error.is_some(), holder)
            };
            if trouble {
                return true;
            }
            if !still_holder {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.elector_status.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }

    /// Database down for everyone: the holder stays active while the API
    /// server shows no other active pod (nobody can take the lease without
    /// the database). Each successful check extends the role by the lease's
    /// validity; cut off from the API too, the role runs out by itself
    /// (isolation). Returns whether we stay active.
    async fn failsafe(&mut self, term: i64) -> bool {
        let now = tokio::time::Instant::now();
        let validity = self.lease_validity;
        match self.api.list_pods_now().await {
            Ok(pods) => {
                let me = &self.config.pod_name;
                let mine_active = pods
                    .iter()
                    .any(|p| &p.name_any() == me && role_label(p) == Some(ROLE_ACTIVE));
                let members: Vec<Pod> = pods.into_iter().filter(is_member).collect();
                if !mine_active || !other_active_members(&members, me).is_empty() {
                    return false;
                }
                if self.failsafe_until.is_none() {
                    warn!(
                        term,
                        "database unreachable for everyone; staying active in failsafe mode"
                    );
                    if let Err(error) = self.api.mark_failsafe().await {
                        warn!(%error, "cannot mark this pod failsafe");
                        return false;
                    }
                }
                self.failsafe_until = Some(now + validity);
            }
            Err(error) => warn!(%error, "failsafe check failed: the Kubernetes API is unreachable"),
        }
        match self.failsafe_until {
            Some(until) if until > now => {
                self.publish(RoleReport::active(
                    &self.config.pod_name,
                    &self.config.cluster,
                    term,
                    until - now,
                ));
                true
            }
            _ => false,
        }
    }

    /// Gained the lease: strip stale active labels, then label ourselves.
    async fn promote(&mut self, term: i64) {
        let me = self.config.pod_name.clone();
        for other in other_active_members(&self.member_pods(), &me) {
            let failsafe = self.api.is_failsafe(&other).await.unwrap_or(true);
            if let Err(error) = self.api.set_role(&other, ROLE_STANDBY, None).await {
                warn!(%error, pod = %other, "cannot remove a stale active label");
            }
            if failsafe {
                self.wait_for_failsafe_end(&other).await;
            }
        }
        match self.api.set_role(&me, ROLE_ACTIVE, Some(term)).await {
            Ok(()) => {
                self.active_term = Some(term);
                self.metrics.role.set(1);
                self.metrics.lease_term.set(term);
                self.metrics.takeovers.inc();
                info!(term, "active: labeled {ROLE_ACTIVE}");
                self.cluster_event(
                    false,
                    reason::BECAME_ACTIVE,
                    format!("{me} became the active member (lease term {term})"),
                )
                .await;
            }
            Err(error) => warn!(%error, "cannot label this pod active; retrying"),
        }
    }

    /// Tells the cockpit "standby" (role file, `/role`, role-change command)
    /// ahead of handing the lease over.
    fn tell_standby(&self) {
        self.publish(RoleReport::standby(
            &self.config.pod_name,
            &self.config.cluster,
        ));
    }

    /// Lost or gave up the lease: tell the cockpit first, then relabel.
    async fn demote(&mut self, why: &str) {
        self.publish(RoleReport::standby(
            &self.config.pod_name,
            &self.config.cluster,
        ));
        self.failsafe_until = None;
        let was = self.active_term.take();
        self.metrics.role.set(0);
        self.metrics.lease_term.set(0);
        if let Err(error) = self
            .api
            .set_role(&self.config.pod_name, ROLE_STANDBY, None)
            .await
        {
            warn!(%error, "cannot label this pod standby; retrying");
        }
        if let Some(term) = was {
            info!(term, why, "standby");
            self.cluster_event(
                false,
                reason::DEMOTED,
                format!("{} is standby: {why}", self.config.pod_name),
            )
            .await;
        }
    }

    /// A holder in failsafe mode demotes when it sees its label go (its mark
    /// disappears), but its cockpit may still act on its last failsafe role
    /// report until that runs out: each lasts the lease's validity from a
    /// check that still saw the label, so at most the validity from now
    /// (the label is gone). Wait for that deadline, not only for the mark:
    /// a cockpit busy in a long step has not read the standby report yet.
    async fn wait_for_failsafe_end(&self, pod: &str) {
        let deadline = tokio::time::Instant::now() + self.lease_validity;
        info!(%pod, "waiting for the former holder's failsafe role to run out");
        let mut confirmed = false;
        while tokio::time::Instant::now() < deadline {
            if !confirmed && let Ok(false) = self.api.is_failsafe(pod).await {
                confirmed = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !confirmed {
            warn!(%pod, "the former holder did not confirm; its failsafe role has run out");
        }
    }

    /// Keeps our own label true to the lease and, while active, other pods'
    /// active labels off. Corrects hand-made changes within a tick.
    async fn correct_labels(&mut self) {
        let pods = self.member_pods();
        let me = self.config.pod_name.as_str();
        let Some(own) = pods.iter().find(|p| p.name_any() == me) else {
            return;
        };
        if self.failsafe_until.is_some()
            && (role_label(own) != Some(ROLE_ACTIVE) || !other_active_members(&pods, me).is_empty())
        {
            self.demote("failsafe mode ended: another member became active")
                .await;
            return;
        }
        let wanted = if self.active_term.is_some() {
            ROLE_ACTIVE
        } else {
            ROLE_STANDBY
        };
        if role_label(own) != Some(wanted) {
            info!(wanted, found = ?role_label(own), "correcting this pod's role label");
            if let Err(error) = self.api.set_role(me, wanted, self.active_term).await {
                warn!(%error, "cannot correct this pod's role label");
            }
        }
        if self.active_term.is_some() {
            for other in other_active_members(&pods, me) {
                info!(pod = %other, "removing a stale active label");
                if let Err(error) = self.api.set_role(&other, ROLE_STANDBY, None).await {
                    warn!(%error, pod = %other, "cannot remove a stale active label");
                }
            }
        }
    }

    /// The holder handles a pending `joc-ha.dev/switchover-to` request.
    async fn handle_switchover(&mut self) {
        let Some(cluster) = self.clusters.state().into_iter().next() else {
            return;
        };
        let Some(value) = cluster.annotations().get(ANNOTATION_SWITCHOVER_TO).cloned() else {
            return;
        };
        // Only the holder acts; with no holder the request waits.
        if self.active_term.is_none() {
            return;
        }
        let requested = Time(jiff::Timestamp::now());
        let me = self.config.pod_name.clone();
        // Take the request off the JocCluster first, so that the member that
        // becomes active by it does not see it again; a request changed in
        // the meantime is left for the next turn.
        match self.api.clear_switchover(&value).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                warn!(%error, "cannot take the switch-over request; retrying");
                return;
            }
        }
        let outcome = match Request::parse(&value) {
            Err(why) => Err(why),
            Ok(request) => self.switch_over(&request).await,
        };
        let (result, message, target) = match &outcome {
            Ok(target) => (
                SwitchoverResult::Completed,
                format!("switched over from {me} to {target}"),
                target.clone(),
            ),
            Err(why) => (
                SwitchoverResult::Rejected,
                format!("switch-over to {value:?} rejected: {why}"),
                value.clone(),
            ),
        };
        let status = SwitchoverStatus {
            from: Some(me),
            to: target,
            requested: Some(requested),
            completed: Some(Time(jiff::Timestamp::now())),
            result,
            message: Some(message.clone()),
        };
        if let Err(error) = self.api.record_switchover(&status).await {
            warn!(%error, "cannot record the switch-over in status");
        }
        let (warning, event_reason, label) = match result {
            SwitchoverResult::Completed => (false, reason::SWITCHOVER_COMPLETED, "completed"),
            SwitchoverResult::Rejected => (true, reason::SWITCHOVER_REJECTED, "rejected"),
        };
        self.metrics
            .switchovers
            .get_or_create(&ResultLabel {
                result: label.to_owned(),
            })
            .inc();
        info!(%message, "switch-over {label}");
        self.cluster_event(warning, event_reason, message).await;
    }

    /// Hands the lease to the chosen target and waits until it is labeled
    /// active; the error says why not.
    async fn switch_over(&mut self, request: &Request) -> Result<String, String> {
        let fresh = self.fresh_members().await?;
        let pods = self.cluster_pods();
        let target = choose_target(request, &self.config.pod_name, &candidates(&pods, &fresh))?;
        // The cockpit hears "standby" before the lease moves, not after
        // (the next tick says "active" again if the hand-over fails).
        self.tell_standby();
        match self
            .elector
            .hand_over(HandOverTarget::Member(target.clone()))
            .await
        {
            Ok(HandOverOutcome::HandedOver { .. }) => {}
            Ok(HandOverOutcome::NotHolder) => {
                return Err("this member no longer holds the lease".to_owned());
            }
            Ok(HandOverOutcome::NoEligibleTarget { reason }) => return Err(reason),
            Err(e) => return Err(format!("the lease database refused the hand-over: {e}")),
        }
        self.follow_lease().await;
        if self.active_term.is_some() {
            self.demote("handed the lease over").await;
        }
        self.wait_for_active(&target).await?;
        Ok(target)
    }

    async fn fresh_members(&self) -> Result<Vec<String>, String> {
        self.elector
            .members()
            .await
            .map(|rows| {
                rows.into_iter()
                    .filter(|m| m.fresh)
                    .map(|m| m.member)
                    .collect()
            })
            .map_err(|e| format!("cannot read member heartbeats: {e}"))
    }

    /// Waits (bounded by twice the TTL) until `target` carries the active label.
    async fn wait_for_active(&self, target: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.lease_ttl * 2;
        loop {
            let labeled = self
                .pods
                .state()
                .iter()
                .any(|p| p.name_any() == target && role_label(p) == Some(ROLE_ACTIVE));
            if labeled {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{target} took the lease but was not labeled active within {:?}",
                    self.config.lease_ttl * 2
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gives the lease to the best ready standby (or releases it) and never
    /// takes it again.
    async fn step_down(&mut self, why: &str) {
        self.stepped_down = true;
        if let Err(error) = self.elector.set_ready(false).await {
            warn!(%error, "cannot mark this member not ready in the lease database");
        }
        if self.active_term.is_none() {
            return;
        }
        self.tell_standby();
        let handed = match self.fresh_members().await {
            Ok(fresh) => {
                let pods = self.cluster_pods();
                match choose_target(
                    &Request::Any,
                    &self.config.pod_name,
                    &candidates(&pods, &fresh),
                ) {
                    Ok(target) => matches!(
                        self.elector.hand_over(HandOverTarget::Member(target)).await,
                        Ok(HandOverOutcome::HandedOver { .. })
                    ),
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        if !handed && let Err(error) = self.elector.release().await {
            warn!(%error, "cannot release the lease; standbys take over when it expires");
        }
        self.demote(why).await;
    }

    /// Every pod of the cluster (members and API servers), from the cache.
    fn cluster_pods(&self) -> Vec<Pod> {
        self.pods.state().iter().map(|p| (**p).clone()).collect()
    }

    /// The member pods of the cluster, from the cache.
    fn member_pods(&self) -> Vec<Pod> {
        self.cluster_pods().into_iter().filter(is_member).collect()
    }

    async fn cluster_event(&self, warning: bool, reason: &str, note: String) {
        let Some(cluster) = self.clusters.state().into_iter().next() else {
            return;
        };
        if let Err(error) = self.api.event(&cluster, warning, reason, note).await {
            warn!(%error, "cannot publish an Event");
        }
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the configured command on a role change, in the background, with
/// the role in its environment; its outcome is logged.
fn run_role_command(command: &str, report: &RoleReport) {
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env("JOC_HA_ROLE", &report.role)
        .env(
            "JOC_HA_TERM",
            report.term.map(|t| t.to_string()).unwrap_or_default(),
        )
        .kill_on_drop(true);
    let role = report.role.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(30), child.status()).await {
            Ok(Ok(status)) if status.success() => info!(role, "role-change command succeeded"),
            Ok(Ok(status)) => warn!(role, %status, "role-change command failed"),
            Ok(Err(error)) => warn!(role, %error, "cannot run the role-change command"),
            Err(_) => warn!(role, "role-change command ran over 30 s; killed"),
        }
    });
}
