//! The thin loop around [`crate::decide::decide`]: waits for an event,
//! takes a snapshot of facts (caches, the elector's role and status, the
//! clock), calls `decide`, and carries out its actions in order. An awaited
//! action's outcome is fed straight back as the next event, so a flow runs
//! to its end before the next input is looked at (as one async function
//! would). No decision is made here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::ANNOTATION_SWITCHOVER_TO;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Config;
use crate::decide::{
    Action, ClusterFacts, ElectorFacts, Event, Facts, JocReadError, Level, MemberFacts, Metric,
    Outcome, Report, State, decide,
};
use crate::http::{Health, PrestopRequest};
use crate::js7::{JocTables, TablesError};
use crate::kubernetes::{ClusterApi, own_pod_facts, pod_facts};
use crate::lease::{ElectorHandle, ElectorStatus, HandOverTarget, Role};
use crate::metrics::{Metrics, ResultLabel, WhyLabel};
use crate::role::{RoleReport, write_role_file};

mod joc_view;
mod observe;
mod waits;
pub use joc_view::JocNotes;
use waits::{recv_signal, run_role_command};

/// How often a js7 holder looks at JOC's tables while it waits for JOC to
/// confirm it (JOC switches at its polls; this bounds the added delay).
const JOC_WAIT_LOOK: Duration = Duration::from_millis(200);

/// An action that keeps the main loop longer is logged.
const SLOW_ACTION: Duration = Duration::from_secs(3);

/// How often bounded waits look again.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Everything the runner touches.
pub struct Runner {
    pub config: Config,
    pub api: ClusterApi,
    pub elector: ElectorHandle,
    pub roles: watch::Receiver<Role>,
    pub elector_status: watch::Receiver<ElectorStatus>,
    pub pods: Store<Pod>,
    /// This pod alone, watched by name.
    pub own_pod: Store<Pod>,
    pub clusters: Store<JocCluster>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub report_tx: watch::Sender<RoleReport>,
    /// js7 mode: JOC's cluster tables.
    pub joc_tables: Option<JocTables>,
    pub state: State,
    /// The elector's last error, to count each new one once.
    pub last_database_error: Option<String>,
    /// When this sidecar last published `DatabaseLoginFailed`.
    pub last_login_event: Option<Instant>,
    /// The last renew latency recorded in the histogram.
    pub last_renew_latency: Option<Duration>,
    /// js7: the lease session has been open, so the database belongs to
    /// this cluster (the session opens only after the claim). Until then
    /// JOC's tables are neither read nor written: on a database another
    /// cluster owns, they hold that cluster's rows under the same member ids.
    pub database_owned: bool,
    /// js7: JOC's view as published on this pod.
    pub joc_notes: JocNotes,
    /// js7: the process groups of the container a fence left running, to
    /// end once the database answers (`Action::EndJocContainer`).
    pub joc_container_left: Vec<i32>,
}

impl Runner {
    /// JOC's tables, once this cluster is known to own the database.
    pub(super) fn owned_joc_tables(&self) -> Option<&JocTables> {
        self.joc_tables.as_ref().filter(|_| self.database_owned)
    }

    /// Waits for events and handles them until SIGTERM or the elector's end.
    pub async fn main_loop(
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
            let mut answer = None;
            let waiting_for_joc = self.state.waiting_for_joc();
            let event = tokio::select! {
                changed = self.roles.changed() => match changed {
                    Ok(()) => Event::LeaseChanged,
                    Err(_) => Event::ElectorStopped,
                },
                () = pods_changed.notified() => Event::PodsChanged,
                () = cluster_changed.notified() => Event::ClusterChanged,
                Some(done) = prestop.recv() => {
                    answer = Some(done);
                    Event::Prestop
                }
                Some(()) = recv_signal(&mut sigterm) => Event::Sigterm,
                _ = joc_tick.tick(), if waiting_for_joc => Event::JocLook,
                _ = tick.tick() => Event::Tick,
            };
            let go_on = self.handle(event).await;
            if let Some(done) = answer {
                let _ = done.send(());
            }
            if !go_on {
                return;
            }
        }
    }

    /// Runs one event and the outcomes it leads to; false once told to exit.
    pub async fn handle(&mut self, event: Event) -> bool {
        let mut go_on = true;
        let mut next = Some(event);
        while let Some(event) = next.take() {
            self.health.loop_alive();
            let facts = self.facts();
            let (state, actions) = decide(&self.state, &facts, event);
            self.state = state;
            let failsafe = self.state.failsafe_until.is_some_and(|u| facts.now < u);
            self.metrics.failsafe.set(i64::from(failsafe));
            for action in actions {
                if action == Action::Exit {
                    go_on = false;
                    continue;
                }
                // Nothing else runs meanwhile: a slow effect is worth a line.
                let what = format!("{action:?}");
                let what = what
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let started = Instant::now();
                let outcome = self.execute(action).await;
                if started.elapsed() > SLOW_ACTION {
                    warn!(action = %what, took = ?started.elapsed(), "an action held up the main loop");
                }
                if let Some(outcome) = outcome {
                    next = Some(Event::Done(outcome));
                }
            }
        }
        go_on
    }

    /// The snapshot `decide` sees.
    fn facts(&mut self) -> Facts {
        let role = *self.roles.borrow();
        let status = self.elector_status.borrow_and_update().clone();
        self.observe(&status);
        let me = self.config.pod_name.as_str();
        Facts {
            now: Instant::now(),
            wall_now: jiff::Timestamp::now(),
            role,
            elector: ElectorFacts {
                connected: status.connected,
                failing: status.last_error.is_some(),
                holder_is_me: status.lease.as_ref().and_then(|l| l.holder.as_deref()) == Some(me),
                live_holder: status
                    .lease
                    .as_ref()
                    .filter(|l| l.live)
                    .and_then(|l| Some((l.holder.clone()?, l.term))),
            },
            pods: self.pods.state().iter().map(|p| pod_facts(p)).collect(),
            cluster: self.clusters.state().first().map(|c| ClusterFacts {
                switchover_to: c.annotations().get(ANNOTATION_SWITCHOVER_TO).cloned(),
                fenced: joc_ha_crds::fencing::fenced_members(c.annotations()),
            }),
            own: self
                .own_pod
                .state()
                .iter()
                .find(|p| p.name_any() == me)
                .map(|p| own_pod_facts(p)),
        }
    }

    /// Tells the cockpit: role file, `GET /role`, role-change command.
    pub fn publish(&self, report: RoleReport) {
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

    /// Carries out one action; awaited ones answer with their outcome.
    async fn execute(&mut self, action: Action) -> Option<Outcome> {
        let me = self.config.pod_name.clone();
        match action {
            Action::Publish(report) => {
                let cluster = &self.config.cluster;
                self.publish(match report {
                    Report::Standby => RoleReport::standby(&me, cluster),
                    Report::Active { term, until } => RoleReport::active(
                        &me,
                        cluster,
                        term,
                        until.saturating_duration_since(Instant::now()),
                    ),
                });
            }
            Action::Label {
                pod,
                label,
                term,
                report,
                context,
            } => {
                let written = self.api.write_role_label(&pod, label.as_str(), term).await;
                if let Err(error) = &written {
                    warn!(%error, %pod, "{context}");
                }
                return report.then_some(Outcome::Labeled(written.is_ok()));
            }
            Action::MarkFailsafe => {
                let marked = self.api.mark_failsafe().await;
                if let Err(error) = &marked {
                    warn!(%error, "cannot mark this pod failsafe");
                }
                return Some(Outcome::FailsafeMarked(marked.is_ok()));
            }
            Action::ReadFailsafeMarks { pods } => {
                let mut marks = Vec::new();
                for pod in pods {
                    let failsafe = self.api.is_failsafe(&pod).await.unwrap_or(true);
                    marks.push((pod, failsafe));
                }
                return Some(Outcome::FailsafeMarks(marks));
            }
            Action::WaitOutFailsafe { pod, period } => self.wait_out_failsafe(&pod, period).await,
            Action::ListPodsNow => {
                let pods = self.api.list_pods_now().await;
                return Some(Outcome::PodsNow(
                    pods.map(|pods| pods.iter().map(pod_facts).collect())
                        .map_err(|e| e.to_string()),
                ));
            }
            Action::WaitForElector { until } => {
                let changed = tokio::time::timeout_at(until, self.elector_status.changed()).await;
                return Some(Outcome::ElectorWaited {
                    timed_out: !matches!(changed, Ok(Ok(()))),
                });
            }
            Action::ReadJoc => {
                let view = match (&self.joc_tables, self.owned_joc_tables()) {
                    (_, Some(tables)) => tables.read().await.map_err(|error| JocReadError {
                        not_installed: matches!(error, TablesError::NotInstalled { .. }),
                        message: error.to_string(),
                    }),
                    (Some(_), None) => Err(JocReadError {
                        not_installed: false,
                        message: "JOC's tables are not read before this cluster's lease session \
                                  is open (the database may belong to another JocCluster)"
                            .to_owned(),
                    }),
                    (None, None) => Err(JocReadError {
                        not_installed: false,
                        message: "not in js7 mode".to_owned(),
                    }),
                };
                match &view {
                    Ok(view) => self.looked_at_joc(view),
                    // Ages from before the outage would look healthy.
                    Err(_) => self.metrics.joc_unread(),
                }
                return Some(Outcome::Joc(view));
            }
            Action::FenceJoc {
                why,
                end_container,
                switch_to,
            } => {
                return Some(Outcome::JocFenced(
                    self.fence_joc(&why, end_container, switch_to.as_deref())
                        .await,
                ));
            }
            Action::EndJocContainer => self.end_joc_container(),
            Action::JocHealth { fresh } => {
                self.health.joc_not_ready.store(!fresh, Ordering::Relaxed);
            }
            Action::SetReady { ready, report } => {
                let set = self
                    .elector
                    .set_ready(ready)
                    .await
                    .map_err(|e| e.to_string());
                if report {
                    return Some(Outcome::ReadySet(set));
                }
                if let Err(error) = set {
                    warn!(%error, ready, "cannot set this member's readiness in the lease database");
                }
            }
            Action::RequestJocSwitch {
                from,
                to,
                pod,
                report,
            } => {
                let requested = match self.owned_joc_tables() {
                    Some(tables) => tables
                        .request_switch(&from, &to)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Ok(false),
                };
                if report {
                    return Some(Outcome::JocSwitch(requested));
                }
                match requested {
                    Ok(true) => info!(%pod, "asked JOC to switch its active member to {pod}"),
                    Ok(false) => {}
                    Err(error) => warn!("{error}"),
                }
            }
            Action::KeepJocHeartbeat => {
                if let (Some(tables), Some(settings)) = (self.owned_joc_tables(), &self.config.joc)
                    && let Err(error) = tables.keep_waiting_heart_beat(&settings.member_id).await
                {
                    warn!("cannot write the heartbeat of this member's waiting JOC: {error}");
                }
            }
            Action::ReleaseGoneJoc {
                member_id,
                started_at,
                successor,
            } => {
                self.release_gone_joc(&member_id, &started_at, successor.as_deref())
                    .await;
            }
            Action::ClearJocSwitch {
                switch_member_id,
                why,
            } => {
                if let Some(tables) = self.owned_joc_tables() {
                    match tables.clear_switch_request(&switch_member_id).await {
                        Ok(true) => info!(
                            switch_member_id,
                            "cleared a left-over switch request in JOC_CLUSTER: {why}"
                        ),
                        Ok(false) => {}
                        Err(error) => warn!("cannot clear a left-over switch request: {error}"),
                    }
                }
            }
            Action::RestoreSwitchover { value } => {
                match self.api.restore_switchover(&value).await {
                    Ok(true) => info!(
                        value,
                        "put the switch-over request back for the next lease holder"
                    ),
                    Ok(false) => {}
                    Err(error) => warn!("cannot put the switch-over request back: {error}"),
                }
            }
            Action::ClearSwitchover { value } => {
                let taken = self.api.clear_switchover(&value).await;
                return Some(Outcome::SwitchoverTaken(taken.map_err(|e| e.to_string())));
            }
            Action::ReadMembers => {
                let members = self.read_members().await.map_err(|e| e.to_string());
                return Some(Outcome::Members(members.map(|rows| {
                    rows.into_iter()
                        .map(|m| MemberFacts {
                            name: m.member,
                            ready: m.ready,
                            fresh: m.fresh,
                        })
                        .collect()
                })));
            }
            Action::ReadOwnPod => {
                let own = self.api.own_pod().await;
                return Some(Outcome::OwnPod(
                    own.map(|pod| pod.as_ref().map(own_pod_facts))
                        .map_err(|e| e.to_string()),
                ));
            }
            Action::HandOver { target } => {
                let outcome = self.elector.hand_over(HandOverTarget::Member(target)).await;
                return Some(Outcome::HandOver(outcome.map_err(|e| e.to_string())));
            }
            Action::Release => {
                if let Err(error) = self.elector.release().await {
                    warn!(%error, "cannot release the lease; standbys take over when it expires");
                }
            }
            Action::LookAtLease { .. } => {
                return Some(Outcome::LeaseLooked(
                    self.elector.look().await.map_err(|e| e.to_string()),
                ));
            }
            Action::ConfirmHolderGone { member, term } => {
                if let Err(error) = self.elector.holder_gone(member, term).await {
                    warn!(%error, "cannot tell the elector that the lease holder is gone");
                }
            }
            Action::WaitForLabel {
                target,
                bound,
                handed_term,
            } => {
                return Some(self.wait_for_label(&target, bound, handed_term).await);
            }
            Action::WaitForJocToLeave { period } => self.wait_for_joc_to_leave(period).await,
            Action::RecordSwitchover(status) => {
                match self
                    .api
                    .record_switchover(&status, crate::decide::supersedes)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => info!(
                        "status already records a later switch-over request; this one is not written over it"
                    ),
                    Err(error) => warn!(%error, "cannot record the switch-over in status"),
                }
            }
            Action::Event {
                warning,
                reason,
                note,
            } => {
                if let Some(cluster) = self.clusters.state().into_iter().next()
                    && let Err(error) = self.api.event(&cluster, warning, reason, note).await
                {
                    warn!(%error, "cannot publish an Event");
                }
            }
            Action::Metric(metric) => match metric {
                Metric::Role(value) => {
                    self.metrics.role.set(value);
                }
                Metric::LeaseTerm(term) => {
                    self.metrics.lease_term.set(term);
                }
                Metric::Takeover => {
                    self.metrics.takeovers.inc();
                }
                Metric::Switchover(result) => {
                    self.metrics
                        .switchovers
                        .get_or_create(&ResultLabel {
                            result: result.to_owned(),
                        })
                        .inc();
                }
                Metric::JocFenced(why) => {
                    self.metrics
                        .joc_fenced
                        .get_or_create(&WhyLabel {
                            why: why.to_owned(),
                        })
                        .inc();
                }
            },
            Action::Log(Level::Info, message) => info!("{message}"),
            Action::Log(Level::Warn, message) => warn!("{message}"),
            Action::Exit => {}
        }
        None
    }
}
