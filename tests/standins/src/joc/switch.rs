//! Switch-over: the active member handler (AMH; file abbreviations: see member.rs)

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection};

use super::Dialect;
use super::member::{License, StartupMode};
use super::properties::SecurityLevel;
use super::services::Services;
use super::sql::{connect, count_controllers, now_utc, sql};

/// How a `switch_member` request ended when it was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchState {
    /// `JocClusterState.ALREADY_STARTED`: the target is already active.
    AlreadyStarted,
    /// `JocClusterState.SWITCH_MEMBER`: JC `setSwitchMember`'s answer, also
    /// when it skipped writing (unknown or stale target; docs/joc-facts.md fact 17).
    SwitchMember,
}

impl SwitchState {
    pub fn name(&self) -> &'static str {
        match self {
            SwitchState::AlreadyStarted => "ALREADY_STARTED",
            SwitchState::SwitchMember => "SWITCH_MEMBER",
        }
    }
}

/// Why `switch_member` failed.
#[derive(Debug)]
pub enum SwitchError {
    /// JOC's refusal text.
    Refused(String),
    /// `JocClusterState.MISSING_LICENSE` (JC `switchMember`).
    MissingLicense,
    /// The database failed (after JOC's retries).
    Database(anyhow::Error),
}

impl From<anyhow::Error> for SwitchError {
    fn from(e: anyhow::Error) -> Self {
        SwitchError::Database(e)
    }
}

/// What `perform` answered (`JocClusterState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Performed {
    Started,
    AlreadyStarted,
    Stopped,
    AlreadyStopped,
    /// A fail-over or switch-over start without a license (AMH).
    MissingLicense,
    /// Closed while waiting for a Controller.
    MissingControllers,
}

/// Waits `d`, or less when the JVM closes (JC `waitFor`).
pub(super) async fn wait_for(closed: &mut tokio::sync::watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = closed.wait_for(|c| *c) => {}
    }
}

/// AMH: starts and stops the active member's services. Runs outside the
/// member's lock, as JOC's is its own monitor: the REST handler can act
/// while a start waits for a Controller.
#[derive(Clone)]
pub struct ActiveMemberHandler {
    pub(super) url: String,
    pub(super) dialect: Dialect,
    pub(super) member_id: String,
    pub(super) security_level: SecurityLevel,
    pub(super) license: License,
    pub(super) controllers_retry: Duration,
    pub(super) services: Services,
    pub(super) closed: tokio::sync::watch::Receiver<bool>,
}

impl ActiveMemberHandler {
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// AMH `perform(mode, START|STOP)`.
    pub async fn perform(&self, mode: StartupMode, start: bool) -> Performed {
        tracing::info!(
            "[{}][perform][active={}]{}",
            mode.name(),
            self.services.is_active(),
            if start { "START" } else { "STOP" }
        );
        if start {
            if mode != StartupMode::Automatic {
                // JCC `rereadClusterMode` → `clusterMode`: when the licensed
                // class loads it sleeps 1 s before closing its class loader
                // (docs/joc-facts.md fact 11). A freeze here and a thaw later resume the
                // start, whoever is MEMBER_ID by then (docs/joc-facts.md fact 20).
                if self.license.present() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if self.services.is_active() {
                return Performed::AlreadyStarted;
            }
            if matches!(mode, StartupMode::ManualSwitchover | StartupMode::Failover)
                && !self.license.present()
            {
                // docs/joc-facts.md fact 10: a target without license refuses to start.
                tracing::error!("[{}][perform]MISSING_LICENSE", mode.name());
                return Performed::MissingLicense;
            }
        } else if !self.services.is_active() {
            return Performed::AlreadyStopped;
        }
        // JC `readCurrentDbInfos`: loops until a Controller of JOC's security
        // level is registered (docs/joc-facts.md fact 9). The poll that called this waits
        // with it: no heartbeats meanwhile.
        let found = self.read_current_db_infos().await;
        if start && !found {
            tracing::error!("[{}][perform]missing controllers", mode.name());
            return Performed::MissingControllers;
        }
        self.services
            .set(start, &format!("[{}][active member services]", mode.name()));
        // AMH `performServices`: `updateHeartBeat` after the services' start
        // or stop, retried twice (docs/joc-facts.md fact 16: every JOC_CLUSTER row, no WHERE).
        self.update_heart_beat(2).await;
        if start {
            Performed::Started
        } else {
            Performed::Stopped
        }
    }

    async fn read_current_db_infos(&self) -> bool {
        let mut closed = self.closed.clone();
        loop {
            if self.is_closed() {
                return false;
            }
            let counted = async {
                let mut conn = connect(&self.url).await?;
                count_controllers(&mut conn, self.dialect, self.security_level).await
            }
            .await;
            match counted {
                Ok(n) if n > 0 => return true,
                Ok(_) => tracing::info!(
                    "[{}]no controllers found. sleep {:?} and try again ...",
                    self.security_level.name(),
                    self.controllers_retry
                ),
                Err(error) => tracing::error!(
                    "[error occured][sleep {:?} and try again ...]{error:#}",
                    self.controllers_retry
                ),
            }
            wait_for(&mut closed, self.controllers_retry).await;
        }
    }

    /// JC `updateHeartBeat(mode, method, retryCount, log)`: DBL
    /// `updateClusterHeartBeat` (`update JOC_CLUSTER set HEART_BEAT`, with no
    /// WHERE, docs/joc-facts.md fact 16) and the own instance's heartbeat, one transaction;
    /// on error retried after 1 s.
    async fn update_heart_beat(&self, retries: u32) {
        let mut closed = self.closed.clone();
        let mut errors = 0;
        loop {
            let result = async {
                let d = self.dialect;
                let mut conn = connect(&self.url).await?;
                let mut tx = conn.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    r#"UPDATE JOC_CLUSTER SET {} = {}"#,
                    quote(d, "HEART_BEAT"),
                    now_utc(d)
                )))
                .execute(&mut *tx)
                .await?;
                sqlx::query(AssertSqlSafe(sql(
                    d,
                    &format!(
                        r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                        now_utc(d)
                    ),
                )))
                .bind(&self.member_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    errors += 1;
                    if errors > retries {
                        tracing::warn!("[updateHeartBeat]{error:#}");
                        return;
                    }
                    wait_for(&mut closed, Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn quote(d: Dialect, name: &str) -> String {
    match d {
        Dialect::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}
