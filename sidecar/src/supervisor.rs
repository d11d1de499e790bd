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
use kube::ResourceExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::config::{Config, JocSettings};
use crate::http::{Health, PrestopRequest, Server};
use crate::js7::{HolderStep, JocTables, holder_step, hostname_of};
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
        role: report_rx,
        registry: Arc::new(registry),
        health: health.clone(),
        prestop: prestop_tx,
        stall_limit: config.lease_ttl * 2,
        prestop_limit: prestop_limit(&config),
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
    // js7: a member is ready for the lease only once its JOC heartbeats.
    lease.ready = config.joc.is_none();
    let lease_validity = lease.validity();
    let joc = match &config.joc {
        Some(settings) => {
            let url = crate::lease::DatabaseUrl::parse(&config.database_url)?;
            info!(member_id = %settings.member_id, polling_interval = ?settings.polling_interval,
                heart_beat_exceeded_interval = ?settings.heart_beat_exceeded_interval,
                "js7 mode: keeping JOC's active member in agreement with the lease");
            Some(JocAgreement::new(
                settings.clone(),
                JocTables::new(&url, settings.heart_beat_exceeded_interval),
            ))
        }
        None => None,
    };
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
        joc,
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
    /// js7 mode: agreement with JOC's own active member.
    joc: Option<JocAgreement>,
}

/// js7 mode: what the sidecar knows of JOC's cluster service.
struct JocAgreement {
    settings: JocSettings,
    tables: JocTables,
    /// JOC's active member at the previous look, to tell a move JOC made by
    /// itself from one we asked for.
    previous_active: Option<String>,
    /// The lease term this member held at that look (None: standby).
    previous_term: Option<i64>,
    /// The readiness last set in the lease (our JOC instance is fresh).
    ready: Option<bool>,
    /// JOC runs this member active: the holder may carry the label.
    confirmed: bool,
    /// The last thing said about waiting or failing, to say it once.
    last_note: Option<String>,
}

impl JocAgreement {
    fn new(settings: JocSettings, tables: JocTables) -> JocAgreement {
        JocAgreement {
            settings,
            tables,
            previous_active: None,
            previous_term: None,
            ready: None,
            confirmed: false,
            last_note: None,
        }
    }

    /// Logs `note` when it differs from the last one.
    fn note(&mut self, note: String) {
        if self.last_note.as_ref() != Some(&note) {
            info!("{note}");
            self.last_note = Some(note);
        }
    }
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
        let mut joc_tick = tokio::time::interval(JOC_WAIT_LOOK);
        joc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    self.agree_with_joc().await;
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
                _ = joc_tick.tick(), if self.waiting_for_joc() => self.agree_with_joc().await,
                _ = tick.tick() => {
                    self.follow_lease().await;
                    self.agree_with_joc().await;
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
        if !self.joc_confirmed() {
            // js7: the label waits until JOC runs this member active.
            self.active_term = Some(term);
            self.metrics.lease_term.set(term);
            self.metrics.takeovers.inc();
            info!(
                term,
                "holding the lease; the {ROLE_ACTIVE} label waits for JOC to confirm this member"
            );
            return;
        }
        self.label_active(term, true).await;
    }

    /// Labels this pod active (the lease holder, confirmed by JOC in js7 mode).
    async fn label_active(&mut self, term: i64, new_term: bool) {
        let me = self.config.pod_name.clone();
        match self.api.set_role(&me, ROLE_ACTIVE, Some(term)).await {
            Ok(()) => {
                self.active_term = Some(term);
                self.metrics.role.set(1);
                self.metrics.lease_term.set(term);
                if new_term {
                    self.metrics.takeovers.inc();
                }
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
        self.tell_standby();
        self.failsafe_until = None;
        if let Some(joc) = &mut self.joc {
            joc.confirmed = false;
        }
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
        // The lease first: a holder resumed after a freeze must see that its
        // role ran out before it defends its label (else it fights the new
        // holder for the Service).
        self.follow_lease().await;
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
        let wanted = if self.active_term.is_some() && self.joc_confirmed() {
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
        if cluster.annotations().contains_key(ANNOTATION_SWITCHOVER_TO) {
            // Only a holder whose role is still valid acts.
            self.follow_lease().await;
        }
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
        self.ask_joc_to_switch_to(&target).await;
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

    /// Waits (bounded by [`Self::switchover_bound`]) until `target` carries
    /// the active label.
    async fn wait_for_active(&self, target: &str) -> Result<(), String> {
        let bound = self.switchover_bound();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let labeled = self
                .pods
                .state()
                .iter()
                .any(|p| p.name_any() == target && role_label(p) == Some(ROLE_ACTIVE));
            if labeled {
                return Ok(());
            }
            self.health.loop_alive();
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{target} took the lease but was not labeled active within {bound:?}"
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
                    Ok(target) => {
                        self.ask_joc_to_switch_to(&target).await;
                        matches!(
                            self.elector.hand_over(HandOverTarget::Member(target)).await,
                            Ok(HandOverOutcome::HandedOver { .. })
                        )
                    }
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        if !handed && let Err(error) = self.elector.release().await {
            warn!(%error, "cannot release the lease; standbys take over when it expires");
        }
        self.demote(why).await;
        if handed {
            self.wait_for_joc_to_leave().await;
        }
    }

    /// js7 mode, stepping down: JOC in this pod is still running (the
    /// preStop hook holds its stop), so it can execute the new holder's
    /// switch request at its next poll; wait for that, bounded, so that JOC
    /// hands over cleanly instead of timing out.
    async fn wait_for_joc_to_leave(&mut self) {
        let Some(joc) = &self.joc else {
            return;
        };
        let me = joc.settings.member_id.clone();
        let deadline = tokio::time::Instant::now()
            + joc.settings.polling_interval * 2
            + self.config.renew_interval * 2;
        while tokio::time::Instant::now() < deadline {
            self.health.loop_alive();
            match joc.tables.read().await {
                Ok(view) if view.active_member() != Some(me.as_str()) => {
                    info!("JOC's active member moved to the new lease holder");
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        warn!(
            "JOC did not move its active member in time; it takes over once this instance's heartbeat is exceeded"
        );
    }

    /// Whether the holder may carry the label: always in generic mode; in
    /// js7 mode once JOC runs this member active.
    fn joc_confirmed(&self) -> bool {
        self.joc.as_ref().is_none_or(|joc| joc.confirmed)
    }

    /// js7 mode: reads JOC's cluster tables; keeps this member's lease
    /// readiness equal to its JOC instance's freshness; as holder, labels
    /// once JOC confirms, asks JOC to switch, or follows JOC (module `js7`).
    async fn agree_with_joc(&mut self) {
        let Some(joc) = &mut self.joc else {
            return;
        };
        let view = match joc.tables.read().await {
            Ok(view) => view,
            Err(error) => {
                let not_installed = matches!(error, crate::js7::TablesError::NotInstalled { .. });
                if joc.last_note.as_deref() != Some(&error.to_string()) {
                    warn!("{error}");
                    joc.last_note = Some(error.to_string());
                }
                if not_installed {
                    self.health.joc_not_ready.store(true, Ordering::Relaxed);
                }
                if not_installed && joc.ready != Some(false) {
                    joc.ready = Some(false);
                    if let Err(error) = self.elector.set_ready(false).await {
                        warn!(%error, "cannot mark this member not ready in the lease database");
                    }
                }
                return;
            }
        };
        let me_id = joc.settings.member_id.clone();
        let joc_fresh = view.is_ready_member(&me_id);
        self.health
            .joc_not_ready
            .store(!joc_fresh, Ordering::Relaxed);
        let ready = joc_fresh && !self.stepped_down;
        if joc.ready != Some(ready) {
            match self.elector.set_ready(ready).await {
                Ok(()) => {
                    joc.ready = Some(ready);
                    if ready {
                        info!(member_id = %me_id, "this member's JOC instance heartbeats: ready for the lease");
                    } else {
                        warn!(member_id = %me_id, "this member's JOC instance has no fresh heartbeat in JOC_INSTANCES (or is an API server): not ready for the lease");
                    }
                }
                Err(error) => {
                    warn!(%error, "cannot set this member's readiness in the lease database")
                }
            }
        }
        let previous = std::mem::replace(
            &mut joc.previous_active,
            view.active_member().map(str::to_owned),
        );
        let previous_term = std::mem::replace(&mut joc.previous_term, self.active_term);
        let Some(term) = self.active_term else {
            return;
        };
        // Only a move JOC made while this member held this term is one it
        // made by itself: the move that came before it (the fail-over or
        // switch-over that gave us the lease) must not send the lease back.
        let previous = previous.filter(|_| previous_term == Some(term));
        let me_pod = self.config.pod_name.clone();
        let members: Vec<String> = self.member_pods().iter().map(|p| p.name_any()).collect();
        let step = holder_step(&view, &me_id, previous.as_deref(), |id| {
            let pod = hostname_of(id);
            (pod != me_pod && members.iter().any(|m| m == pod)).then(|| pod.to_owned())
        });
        let Some(joc) = &mut self.joc else {
            return;
        };
        let was_confirmed = joc.confirmed;
        joc.confirmed = step == HolderStep::Confirmed;
        match step {
            HolderStep::Confirmed => {
                joc.last_note = None;
                if !was_confirmed {
                    info!(term, "JOC confirms this member active");
                    self.label_active(term, false).await;
                }
            }
            HolderStep::Wait(why) => {
                joc.note(format!("holding the lease (term {term}): {why}"));
            }
            HolderStep::RequestSwitch => {
                let Some(active) = view.active_member().map(str::to_owned) else {
                    return;
                };
                match joc.tables.request_switch(&active, &me_id).await {
                    Ok(true) => {
                        let note = format!(
                            "{me_pod} holds the lease (term {term}); asked JOC to switch its active member from {} to {me_pod}",
                            hostname_of(&active)
                        );
                        info!("{note}");
                        joc.last_note = Some(note.clone());
                        self.cluster_event(false, reason::JOC_SWITCH_REQUESTED, note)
                            .await;
                    }
                    Ok(false) => {} // JOC moved meanwhile: judged at the next look.
                    Err(error) => warn!("{error}"),
                }
            }
            HolderStep::FollowJoc(pod) => {
                let note =
                    format!("JOC made {pod} active by itself; {me_pod} hands the lease over to it");
                info!("{note}");
                self.tell_standby();
                match self
                    .elector
                    .hand_over(HandOverTarget::Member(pod.clone()))
                    .await
                {
                    Ok(HandOverOutcome::HandedOver { .. }) => {
                        self.cluster_event(false, reason::LEASE_FOLLOWED_JOC, note)
                            .await;
                        self.follow_lease().await;
                        if self.active_term.is_some() {
                            self.demote("handed the lease to the member JOC made active")
                                .await;
                        }
                    }
                    Ok(other) => {
                        warn!(?other, %pod, "cannot hand the lease to JOC's active member")
                    }
                    Err(error) => {
                        warn!(%error, %pod, "cannot hand the lease to JOC's active member")
                    }
                }
            }
        }
        if was_confirmed && !self.joc_confirmed() && self.active_term.is_some() {
            // JOC no longer runs us: users must not be sent here.
            if let Err(error) = self.api.set_role(&me_pod, ROLE_STANDBY, None).await {
                warn!(%error, "cannot remove this pod's active label");
            }
            self.metrics.role.set(0);
        }
    }

    /// js7 mode, handing the lease over while JOC runs this member: ask JOC
    /// to switch to the target right away, so that JOC's active instance
    /// executes it at its next poll rather than after the target's first
    /// look. If the hand-over then fails, the lease follows JOC.
    async fn ask_joc_to_switch_to(&mut self, pod: &str) {
        let Some(joc) = &self.joc else {
            return;
        };
        if !joc.confirmed {
            return;
        }
        let me = joc.settings.member_id.clone();
        let target = crate::js7::member_id(pod, &joc.settings.data_dir);
        match joc.tables.request_switch(&me, &target).await {
            Ok(true) => info!(%pod, "asked JOC to switch its active member to {pod}"),
            Ok(false) => {}
            Err(error) => warn!("{error}"),
        }
    }

    /// js7 mode: the holder is waiting for JOC to confirm it, so it looks
    /// more often than once per renew interval.
    fn waiting_for_joc(&self) -> bool {
        self.active_term.is_some() && self.joc.as_ref().is_some_and(|j| !j.confirmed)
    }

    /// How long a switch-over may take until the target is labeled: the
    /// lease hand-over, and in js7 mode JOC's switch (two polls).
    fn switchover_bound(&self) -> Duration {
        let joc = self
            .joc
            .as_ref()
            .map_or(Duration::ZERO, |j| j.settings.polling_interval * 3);
        self.config.lease_ttl * 2 + joc
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

/// How often a js7 holder looks at JOC's tables while it waits for JOC to
/// confirm it (JOC switches at its polls; this bounds the added delay).
const JOC_WAIT_LOOK: Duration = Duration::from_millis(200);

/// How long the cockpit's preStop hook may wait for the hand-over: twice
/// the TTL, and in js7 mode JOC's switch too (two polls), within the pod's
/// grace period.
fn prestop_limit(config: &Config) -> Duration {
    let joc = config.joc.as_ref().map_or(Duration::ZERO, |j| {
        j.polling_interval * 2 + config.renew_interval * 2
    });
    (config.lease_ttl * 2 + joc).min(Duration::from_secs(50))
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
