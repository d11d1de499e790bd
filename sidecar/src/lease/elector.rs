//! The elector's public face: one task per member that keeps a session with
//! the database, heartbeats, competes for the lease, renews it while active
//! and publishes the role. What it decides is in `decide.rs` (pure); how it
//! runs the statements in `runner.rs` and `session.rs`. Errors are logged
//! (redacted) and retried with back-off; nothing here panics on input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::config::LeaseConfig;
use super::error::LeaseError;
use super::runner::Runner;
use super::store::{Ctx, MemberRow};
use super::url::DatabaseUrl;

/// PostgreSQL: after a holder's session ended, standbys wait this long before
/// taking over, so that a live holder whose session was ended by the server
/// has seen the closed connection (it always waits for input) and demoted.
pub const TAKEOVER_GUARD: Duration = Duration::from_millis(250);

/// What this member may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    /// Active with fencing token `term` until `until` (local monotonic
    /// clock), unless a later value extends it. The workload must stop
    /// acting at `until` even if it hears nothing else.
    Active {
        term: i64,
        until: Instant,
    },
}

impl Role {
    pub fn is_active(&self) -> bool {
        matches!(self, Role::Active { .. })
    }
}

/// The lease as this member last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub holder: Option<String>,
    pub term: i64,
    /// Held and not expired at the time of reading.
    pub live: bool,
}

/// Health of the elector, for status reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectorStatus {
    /// A session with the database is open.
    pub connected: bool,
    /// The last error (redacted); cleared on reconnect.
    pub last_error: Option<LeaseError>,
    pub lease: Option<LeaseSnapshot>,
    /// The database's time at the last read (Unix ms; SQLite: host monotonic ms).
    pub db_time_ms: Option<i64>,
    /// How long the holder's last successful renew took.
    pub last_renew_latency: Option<Duration>,
}

/// Whom to hand the lease to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOverTarget {
    Member(String),
    /// The ready member with the freshest heartbeat.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOverOutcome {
    HandedOver {
        to: String,
        term: i64,
    },
    /// This member does not hold the lease.
    NotHolder,
    /// No eligible target (named member missing, not ready, API server or
    /// stale heartbeat); the lease stays here under a new term.
    NoEligibleTarget {
        reason: String,
    },
}

pub(crate) enum Command {
    HandOver(
        HandOverTarget,
        oneshot::Sender<Result<HandOverOutcome, LeaseError>>,
    ),
    Release(oneshot::Sender<Result<bool, LeaseError>>),
    SetReady(bool, oneshot::Sender<Result<(), LeaseError>>),
    Members(oneshot::Sender<Result<Vec<MemberRow>, LeaseError>>),
    /// Kubernetes reports every process gone that could act under
    /// `member`'s lease `term`.
    HolderGone {
        member: String,
        term: i64,
    },
    /// Read the lease now, if not active (a pod was labeled active by a
    /// holder this member has not read yet); answered once read.
    Look(oneshot::Sender<Result<(), LeaseError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Controls a running elector. Dropping it stops the elector too (it
/// releases the lease if it holds it).
#[derive(Debug)]
pub struct ElectorHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ElectorStatus>,
    statements: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::HandOver(..) => "HandOver",
            Command::Release(_) => "Release",
            Command::SetReady(..) => "SetReady",
            Command::Members(_) => "Members",
            Command::HolderGone { .. } => "HolderGone",
            Command::Look(_) => "Look",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

impl ElectorHandle {
    /// Hands the lease over: this member demotes first, then the target gets
    /// term + 1. Standbys hear of it at once (NOTIFY on PostgreSQL, session
    /// lock wake-up on MariaDB, next heartbeat on SQLite). Stop the workload
    /// before calling: the current term ends in every case, and without an
    /// eligible target this member continues under a new term.
    pub async fn hand_over(&self, target: HandOverTarget) -> Result<HandOverOutcome, LeaseError> {
        self.call(|reply| Command::HandOver(target, reply)).await?
    }

    /// Demotes and ends the lease now, and stops competing for it (as
    /// `set_ready(false)`). True if this member held it.
    pub async fn release(&self) -> Result<bool, LeaseError> {
        self.call(Command::Release).await?
    }

    /// Whether this member may acquire the lease and be a hand-over target.
    pub async fn set_ready(&self, ready: bool) -> Result<(), LeaseError> {
        self.call(|reply| Command::SetReady(ready, reply)).await?
    }

    /// Kubernetes reports that every process that could act under
    /// `member`'s lease `term` is gone (its pod's containers ran anew or
    /// stopped). Once that holder's session lock is free too, this member
    /// takes over at once instead of waiting out the rule for a holder blind
    /// to its own session's end (MariaDB: `hold + margin` after its last
    /// renew). The statement still needs that term and session.
    pub async fn holder_gone(&self, member: String, term: i64) -> Result<(), LeaseError> {
        self.commands
            .send(Command::HolderGone { member, term })
            .await
            .map_err(|_| LeaseError::Stopped)
    }

    /// Asks the elector to read the lease now and waits until it has (it
    /// reads nothing while it holds the lease or has no session).
    pub async fn look(&self) -> Result<(), LeaseError> {
        self.call(Command::Look).await?
    }

    /// The cluster's member rows.
    pub async fn members(&self) -> Result<Vec<MemberRow>, LeaseError> {
        self.call(Command::Members).await?
    }

    pub fn status(&self) -> watch::Receiver<ElectorStatus> {
        self.status.clone()
    }

    /// Statements sent to the database so far (all connections of this member).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Releases the lease if held and stops the elector.
    pub async fn shutdown(mut self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LeaseError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| LeaseError::Stopped)?;
        answer.await.map_err(|_| LeaseError::Stopped)
    }
}

/// Starts electors.
pub struct Elector;

impl Elector {
    /// Validates the configuration and URL and starts the elector task (on
    /// the current Tokio runtime). Connection problems are not errors here:
    /// the task retries with back-off and reports them in
    /// [`ElectorHandle::status`] and the log.
    pub fn start(
        config: LeaseConfig,
        url: &str,
    ) -> Result<(ElectorHandle, watch::Receiver<Role>), LeaseError> {
        config.validate()?;
        let url = DatabaseUrl::parse(url)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            LeaseError::InvalidConfig("Elector::start must be called within a Tokio runtime".into())
        })?;
        let statements = Arc::new(AtomicU64::new(0));
        let ctx = Arc::new(Ctx::new(&config, url, statements.clone()));
        let (role_tx, role_rx) = watch::channel(Role::Standby);
        let (status_tx, status_rx) = watch::channel(ElectorStatus::default());
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let runner = Runner::new(config, ctx, role_tx, status_tx, commands_rx);
        let task = runtime.spawn(runner.run());
        Ok((
            ElectorHandle {
                commands: commands_tx,
                status: status_rx,
                statements,
                task: Some(task),
            },
            role_rx,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_checks_runtime_config_and_url() {
        let error = Elector::start(LeaseConfig::new("c", "m"), "sqlite:///tmp/lease.db")
            .expect_err("no runtime");
        assert!(error.to_string().contains("Tokio runtime"), "{error}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut config = LeaseConfig::new("c", "m");
            config.renew_interval = Duration::from_secs(3);
            let error =
                Elector::start(config, "sqlite:///tmp/lease.db").expect_err("renew > ttl/3");
            assert!(matches!(error, LeaseError::InvalidConfig(_)), "{error}");
            let error = Elector::start(LeaseConfig::new("c", "m"), "postgres://u:hunter2@h:bad/db")
                .expect_err("malformed URL");
            let text = error.to_string();
            assert!(
                text.contains("invalid port") && !text.contains("hunter2"),
                "{text}"
            );
        });
    }
}
