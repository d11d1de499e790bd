//! The runner's longer effects: fencing this pod's JOC, the bounded waits
//! of a hand-over, signals and the role-change command.

use std::time::Duration;

use joc_ha_crds::names::ROLE_ACTIVE;
use kube::ResourceExt;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::decide::{FenceDone, Outcome};
use crate::kubernetes::role_label;
use crate::lease::{LeaseError, MemberRow, Role};
use crate::role::RoleReport;

use super::{Runner, WAIT_POLL};

impl Runner {
    /// Fences this pod's JOC: SIGKILL of its JVM (found by `-Djetty.base=`),
    /// confirmed gone, then JOC's clean-shutdown writes for its member
    /// (after a switch request to `switch_to`, if given: so the row stays
    /// and only that member's JOC takes over).
    pub(super) async fn fence_joc(
        &mut self,
        why: &str,
        end_container: bool,
        switch_to: Option<&str>,
    ) -> Result<FenceDone, String> {
        use crate::js7::fence::{CONFIRM_BOUND, Fenced, fence_jvm};
        let settings = self
            .config
            .joc
            .as_ref()
            .ok_or_else(|| "not in js7 mode".to_owned())?;
        info!(jetty_base = %settings.jetty_base, "fencing JOC: {why}");
        let (pids, groups, ended) = match fence_jvm(
            std::path::Path::new("/proc"),
            &settings.jetty_base,
            CONFIRM_BOUND,
            end_container,
        )
        .await
        .map_err(|e| e.to_string())?
        {
            Fenced::NoJvm => (Vec::new(), Vec::new(), false),
            Fenced::Killed {
                pids,
                groups,
                ended,
            } => (pids, groups, ended),
        };
        let container_left = !ended && !groups.is_empty();
        if container_left {
            self.joc_container_left = groups.clone();
        }
        let tables = self.owned_joc_tables();
        if let (Some(target), Some(tables)) = (switch_to, tables) {
            // The dead JVM's session, and with it any row lock it held, is
            // gone now: a request that failed behind that lock lands.
            match tables.request_switch(&settings.member_id, target).await {
                Ok(written) => info!(written, %target, "switch request written after the fence"),
                Err(error) => {
                    warn!(%error, %target, "cannot write the switch request after the fence")
                }
            }
        }
        let release = match tables {
            Some(tables) => tables
                .release_fenced_member(&settings.member_id)
                .await
                .map_err(|e| e.to_string()),
            None => Err("not in js7 mode, or the database is not this cluster's".to_owned()),
        };
        Ok(FenceDone {
            pids,
            container_ended: ended && !groups.is_empty(),
            container_left,
            release,
        })
    }

    /// Ends the container a fence left running (`EndJocContainer`).
    pub(super) fn end_joc_container(&mut self) {
        let groups = std::mem::take(&mut self.joc_container_left);
        let ended = crate::js7::fence::end_groups(&groups);
        if ended.is_empty() {
            info!(?groups, "the fenced JOC's container had ended already");
        } else {
            info!(
                ?ended,
                "ended the fenced JOC's container: the kubelet starts it anew"
            );
        }
    }

    /// Acts on JOC's cluster row of a gone active JOC
    /// (`JocTables::release_gone_active`); the outcome is logged.
    pub(super) async fn release_gone_joc(
        &self,
        member_id: &str,
        started_at: &str,
        successor: Option<&str>,
    ) {
        let Some(tables) = self.owned_joc_tables() else {
            return;
        };
        match tables
            .release_gone_active(member_id, started_at, successor)
            .await
        {
            Ok(true) => match successor {
                Some(successor) => info!(
                    member_id,
                    successor,
                    "handed JOC's cluster row of a JOC whose container is gone to this member's JOC: it takes over at its next poll, the others wait for it"
                ),
                None => info!(
                    member_id,
                    "deleted JOC's cluster row of a JOC whose container is gone: JOC elects at its next poll"
                ),
            },
            Ok(false) => {}
            Err(error) => warn!("cannot release the row of a gone JOC: {error}"),
        }
    }

    /// The lease members, for a switch-over or a step-down. A read on a
    /// connection a restarted database dropped fails, and the elector is
    /// not connected until it reconnected: such errors are tried again for
    /// up to one lease TTL, so that a transient loss does not reject the
    /// request; a database away for longer than that costs the lease anyway.
    pub(super) async fn read_members(&self) -> Result<Vec<MemberRow>, LeaseError> {
        let deadline = Instant::now() + self.config.lease_ttl;
        loop {
            match self.elector.members().await {
                Err(
                    LeaseError::ConnectionLost { .. }
                    | LeaseError::NotConnected(_)
                    | LeaseError::Timeout { .. },
                ) if Instant::now() < deadline => {
                    self.health.loop_alive();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits `period` (the former failsafe holder's last role report may be
    /// acted on until then), noting whether its mark went.
    pub(super) async fn wait_out_failsafe(&self, pod: &str, period: Duration) {
        let deadline = Instant::now() + period;
        let mut confirmed = false;
        while Instant::now() < deadline {
            self.health.loop_alive();
            if !confirmed && let Ok(false) = self.api.is_failsafe(pod).await {
                confirmed = true;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
        if !confirmed {
            warn!(%pod, "the former holder did not confirm; its failsafe role has run out");
        }
    }

    /// Waits, at most `bound`, until `target` carries the active label, or
    /// the lease comes back to this member (then it must act, not wait).
    pub(super) async fn wait_for_label(
        &self,
        target: &str,
        bound: Duration,
        handed_term: Option<i64>,
    ) -> Outcome {
        let deadline = Instant::now() + bound;
        loop {
            let back = match *self.roles.borrow() {
                Role::Active { term, until } => {
                    until > Instant::now() && handed_term.is_none_or(|handed| term > handed)
                }
                Role::Standby => false,
            };
            if back {
                return Outcome::LeaseCameBack;
            }
            let labeled = self
                .pods
                .state()
                .iter()
                .any(|p| p.name_any() == target && role_label(p) == Some(ROLE_ACTIVE));
            if labeled {
                return Outcome::TargetLabeled(Ok(()));
            }
            self.health.loop_alive();
            if Instant::now() >= deadline {
                return Outcome::TargetLabeled(Err(format!(
                    "{target} took the lease but was not labeled active within {bound:?}"
                )));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// js7 mode, stepping down: wait, bounded, for JOC to move its active
    /// member to the new holder, so that JOC hands over cleanly instead of
    /// timing out.
    pub(super) async fn wait_for_joc_to_leave(&self, period: Duration) {
        let (Some(tables), Some(joc)) = (self.owned_joc_tables(), &self.config.joc) else {
            return;
        };
        let me = joc.member_id.as_str();
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            self.health.loop_alive();
            match tables.read().await {
                Ok(view) if view.active_member() != Some(me) => {
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
}

pub(super) async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the configured command on a role change, in the background, with
/// the role in its environment; its outcome is logged.
pub(super) fn run_role_command(command: &str, report: &RoleReport) {
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
