//! The elector: one task per member that keeps a session with the database,
//! heartbeats, competes for the lease, renews it while active and publishes
//! the role. Errors are logged (redacted) and retried with back-off; nothing
//! here panics on input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::config::{LeaseConfig, MemberKind};
use super::error::LeaseError;
use super::store::{Ctx, LeaseView, MemberRow, SessionEvent, Store, WaiterConn};
use super::url::DatabaseUrl;
use super::waiter::{Released, Waiter};

/// PostgreSQL: after a holder's session ended, standbys wait this long before
/// taking over, so that a live holder whose session was ended by the server
/// has seen the closed connection (it always waits for input) and demoted.
pub const TAKEOVER_GUARD: Duration = Duration::from_millis(250);

/// Slack added to timers derived from database times.
const TIMER_SLACK: Duration = Duration::from_millis(3);
/// After this many refused attempts on a lease that looked free, the session
/// is assumed broken (its session lock check fails) and reopened.
const MAX_REFUSED: u32 = 3;

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

enum Command {
    HandOver(
        HandOverTarget,
        oneshot::Sender<Result<HandOverOutcome, LeaseError>>,
    ),
    Release(oneshot::Sender<Result<bool, LeaseError>>),
    SetReady(bool, oneshot::Sender<Result<(), LeaseError>>),
    Members(oneshot::Sender<Result<Vec<MemberRow>, LeaseError>>),
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
        let runner = Runner {
            ready: config.ready,
            config,
            ctx,
            role: role_tx,
            status: status_tx,
            commands: commands_rx,
            stopping: false,
            shutdown_replies: Vec::new(),
            last_active_term: 0,
        };
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

struct Runner {
    config: LeaseConfig,
    ctx: Arc<Ctx>,
    role: watch::Sender<Role>,
    status: watch::Sender<ElectorStatus>,
    commands: mpsc::Receiver<Command>,
    ready: bool,
    stopping: bool,
    shutdown_replies: Vec<oneshot::Sender<()>>,
    /// The last term this process was active in (0: never). A term is used
    /// for one active period only: after a demotion, even with the row still
    /// ours, we take a new term.
    last_active_term: i64,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    term: i64,
    until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Steal {
    at: Instant,
    term: i64,
    key: i64,
}

/// State of one database session.
struct Session {
    store: Store,
    waiter: Option<Waiter>,
    released_rx: mpsc::UnboundedReceiver<Released>,
    active: Option<Active>,
    /// The last lease view and the local instant its answer arrived.
    view: Option<(LeaseView, Instant)>,
    next_tick: Instant,
    expiry_check: Option<Instant>,
    steal: Option<Steal>,
    /// The waiter's last report and when it came.
    released: Option<(Released, Instant)>,
    refused: u32,
    steal_failures: u32,
    retry: Backoff,
}

impl Session {
    fn wake_at(&self) -> Instant {
        let mut wake = self.next_tick;
        for at in [
            self.expiry_check,
            self.steal.map(|s| s.at),
            self.active.map(|a| a.until),
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(at);
        }
        wake
    }
}

enum Event {
    Command(Option<Command>),
    Session(SessionEvent),
    Released(Released),
    Timer,
}

fn is_fatal(error: &LeaseError) -> bool {
    matches!(
        error,
        LeaseError::ConnectionLost { .. } | LeaseError::Timeout { .. } | LeaseError::Stopped
    )
}

fn ms(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

impl Runner {
    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !self.stopping {
            let Some((store, waiter)) = self.connect(&mut backoff).await else {
                break;
            };
            let started = Instant::now();
            let result = self.serve(store, waiter).await;
            self.publish_role(Role::Standby);
            self.status.send_modify(|s| s.connected = false);
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(member = %self.config.member, %error, "lease session ended");
                    self.status
                        .send_modify(|s| s.last_error = Some(error.clone()));
                    // A session that lived a while was fine; start over fast.
                    if started.elapsed() > self.config.ttl {
                        backoff.reset();
                    }
                    let pause = backoff.next_delay();
                    self.pause(pause).await;
                }
            }
        }
        self.publish_role(Role::Standby);
        self.status.send_modify(|s| s.connected = false);
        for reply in self.shutdown_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Opens a session, retrying with back-off; answers commands meanwhile.
    async fn connect(&mut self, backoff: &mut Backoff) -> Option<(Store, Option<WaiterConn>)> {
        loop {
            if self.stopping {
                return None;
            }
            let connecting = Store::connect(self.ctx.clone());
            tokio::pin!(connecting);
            let result = loop {
                tokio::select! {
                    result = &mut connecting => break result,
                    command = self.commands.recv() => {
                        self.offline_command(command);
                        if self.stopping {
                            return None;
                        }
                    }
                }
            };
            match result {
                Ok(opened) => {
                    tracing::info!(member = %self.config.member, target = %self.ctx.target(),
                        "lease session opened");
                    self.status.send_modify(|s| {
                        s.connected = true;
                        s.last_error = None;
                    });
                    return Some(opened);
                }
                Err(error) => {
                    let pause = backoff.next_delay();
                    tracing::warn!(member = %self.config.member, %error, retry_in = ?pause,
                        "cannot open the lease session");
                    self.status
                        .send_modify(|s| s.last_error = Some(error.clone()));
                    self.pause(pause).await;
                }
            }
        }
    }

    /// Sleeps while answering commands.
    async fn pause(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        while !self.stopping {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                command = self.commands.recv() => self.offline_command(command),
            }
        }
    }

    fn offline_command(&mut self, command: Option<Command>) {
        let not_connected = || {
            LeaseError::NotConnected(
                self.status
                    .borrow()
                    .last_error
                    .as_ref()
                    .map_or_else(|| "none yet".to_owned(), ToString::to_string),
            )
        };
        match command {
            None => self.stopping = true,
            Some(Command::Shutdown(reply)) => {
                self.stopping = true;
                self.shutdown_replies.push(reply);
            }
            Some(Command::HandOver(_, reply)) => {
                let _ = reply.send(Ok(HandOverOutcome::NotHolder));
            }
            Some(Command::Release(reply)) => {
                self.ready = false;
                let _ = reply.send(Ok(false));
            }
            Some(Command::SetReady(ready, reply)) => {
                self.ready = ready;
                let _ = reply.send(Ok(()));
            }
            Some(Command::Members(reply)) => {
                let _ = reply.send(Err(not_connected()));
            }
        }
    }

    async fn serve(&mut self, store: Store, waiter: Option<WaiterConn>) -> Result<(), LeaseError> {
        let (released_tx, released_rx) = mpsc::unbounded_channel();
        let waiter = waiter.map(|conn| Waiter::spawn(self.ctx.clone(), conn, released_tx));
        let now = Instant::now();
        let mut s = Session {
            store,
            waiter,
            released_rx,
            active: None,
            view: None,
            next_tick: now,
            expiry_check: None,
            steal: None,
            released: None,
            refused: 0,
            steal_failures: 0,
            retry: Backoff::new(Duration::from_millis(100), self.config.renew_interval),
        };
        s.store.register(self.ready).await?;
        loop {
            let wake = s.wake_at();
            let event = tokio::select! {
                biased;
                command = self.commands.recv() => Event::Command(command),
                event = s.store.next_event() => Event::Session(event),
                Some(released) = s.released_rx.recv() => Event::Released(released),
                _ = tokio::time::sleep_until(wake) => Event::Timer,
            };
            self.check_deadline(&mut s);
            let result = match event {
                Event::Command(None) => {
                    self.stopping = true;
                    self.close(&mut s).await;
                    return Ok(());
                }
                Event::Command(Some(Command::Shutdown(reply))) => {
                    self.stopping = true;
                    self.shutdown_replies.push(reply);
                    self.close(&mut s).await;
                    return Ok(());
                }
                Event::Command(Some(command)) => self.command(&mut s, command).await,
                Event::Session(SessionEvent::Notified) => {
                    if s.active.is_none() {
                        self.refresh(&mut s).await
                    } else {
                        Ok(())
                    }
                }
                Event::Session(SessionEvent::Lost(error)) => {
                    self.demote(&mut s, "the database session ended");
                    Err(error)
                }
                Event::Released(released) => self.on_released(&mut s, released).await,
                Event::Timer => self.on_timer(&mut s).await,
            };
            if let Err(error) = result {
                if is_fatal(&error) {
                    self.demote(&mut s, "the database session failed");
                    return Err(error);
                }
                tracing::warn!(member = %self.config.member, %error, "lease statement failed");
                self.status
                    .send_modify(|st| st.last_error = Some(error.clone()));
                let retry = Instant::now() + s.retry.next_delay();
                s.next_tick = s.next_tick.min(retry).max(Instant::now());
            }
        }
    }

    fn check_deadline(&mut self, s: &mut Session) {
        if let Some(active) = s.active
            && Instant::now() >= active.until
        {
            self.demote(s, "the local deadline passed without a successful renew");
        }
    }

    async fn on_timer(&mut self, s: &mut Session) -> Result<(), LeaseError> {
        let now = Instant::now();
        if let Some(steal) = s.steal
            && now >= steal.at
        {
            s.steal = None;
            self.try_steal(s, steal).await?;
        }
        if let Some(at) = s.expiry_check
            && now >= at
        {
            s.expiry_check = None;
            self.refresh(s).await?;
        }
        if Instant::now() >= s.next_tick {
            self.tick(s).await?;
        }
        Ok(())
    }

    /// Renew (holder) or heartbeat (everyone else), once per renew interval.
    async fn tick(&mut self, s: &mut Session) -> Result<(), LeaseError> {
        if let Some(active) = s.active {
            let sent = Instant::now();
            let timeout = active
                .until
                .saturating_duration_since(sent)
                .max(Duration::from_millis(1));
            match s.store.renew(active.term, timeout).await {
                Ok(true) if Instant::now() >= active.until => {
                    // Too late: the workload has stopped at the old deadline.
                    // A new active period needs a new term.
                    self.demote(s, "the renew succeeded only after the local deadline");
                    self.refresh(s).await
                }
                Ok(true) => {
                    let took = sent.elapsed();
                    self.status
                        .send_modify(|st| st.last_renew_latency = Some(took));
                    s.retry.reset();
                    s.next_tick = sent + self.config.renew_interval;
                    let until = self.until_after(s, sent);
                    s.active = Some(Active {
                        term: active.term,
                        until,
                    });
                    self.publish_role(Role::Active {
                        term: active.term,
                        until,
                    });
                    Ok(())
                }
                Ok(false) => {
                    self.demote(s, "the renew was refused: the lease changed hands");
                    s.next_tick = Instant::now() + self.config.renew_interval;
                    self.refresh(s).await
                }
                Err(error) => Err(error),
            }
        } else {
            s.next_tick = Instant::now() + self.config.renew_interval;
            let view = s.store.heartbeat(self.ready).await?;
            match view {
                Some(view) => self.on_view(s, view, Instant::now()).await,
                None => {
                    // MariaDB: the lease is read when something happens and
                    // at the observed expiry; besides that once per TTL, or
                    // every tick for a member standing back after a release
                    // (so it learns soon that someone else took over).
                    let every = if self.config.kind == MemberKind::Member && !self.ready {
                        self.config.renew_interval
                    } else {
                        self.config.ttl
                    };
                    let stale = s.view.as_ref().is_none_or(|(_, at)| at.elapsed() >= every);
                    let reads_lease = s.store.caps().heartbeat_reads_lease;
                    if reads_lease || stale {
                        self.refresh(s).await
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }

    /// How long a renew (or acquire) sent at `sent` lets us act.
    fn until_after(&self, s: &Session, sent: Instant) -> Instant {
        let until = sent + self.config.validity();
        if s.store.caps().holder_blind_to_session_end {
            until.min(sent + self.config.hold())
        } else {
            until
        }
    }

    fn wants_lease(&self) -> bool {
        self.ready && self.config.kind == MemberKind::Member
    }

    /// Reads the lease (creating the row if it vanished) and reacts.
    async fn refresh(&mut self, s: &mut Session) -> Result<(), LeaseError> {
        let view = match s.store.read().await? {
            Some(view) => view,
            None => {
                s.store.register(self.ready).await?;
                s.store.read().await?.ok_or_else(|| LeaseError::Database {
                    op: "read lease",
                    target: self.ctx.target(),
                    detail: "the lease row disappeared right after it was created".to_owned(),
                })?
            }
        };
        self.on_view(s, view, Instant::now()).await
    }

    async fn on_view(
        &mut self,
        s: &mut Session,
        view: LeaseView,
        received: Instant,
    ) -> Result<(), LeaseError> {
        self.status.send_modify(|st| {
            st.db_time_ms = Some(view.db_now_ms);
            st.lease = Some(LeaseSnapshot {
                holder: view.holder.clone(),
                term: view.term,
                live: view.is_live(),
            });
        });
        s.view = Some((view.clone(), received));
        let mine = view.holder.as_deref() == Some(self.config.member.as_str())
            && view.holder_session == Some(s.store.key());
        if let Some(active) = s.active {
            if mine && view.term == active.term && view.is_live() {
                return Ok(());
            }
            self.demote(s, "the lease changed hands");
        }
        if !self.wants_lease() {
            s.expiry_check = None;
            s.steal = None;
            self.watch_holder(s, None).await?;
            if mine && view.is_live() {
                // Ours but we may not act (not ready): let others have it.
                s.store.release(view.term).await?;
            }
            return Ok(());
        }
        if mine && view.is_live() {
            self.watch_holder(s, None).await?;
            let sent = Instant::now();
            let taken = if view.term > self.last_active_term {
                // Handed over to us: confirm with a renew, keeping the term.
                s.store.renew(view.term, self.ctx.op_timeout).await?
            } else {
                // Still ours after a demotion: a new active period gets a new term.
                s.store.acquire(view.term).await?
            };
            let term = if view.term > self.last_active_term {
                view.term
            } else {
                view.term + 1
            };
            return self.took_or_refused(s, taken, term, sent);
        }
        if !view.is_live() {
            s.steal = None;
            self.watch_holder(s, None).await?;
            let sent = Instant::now();
            let taken = s.store.acquire(view.term).await?;
            return self.took_or_refused(s, taken, view.term + 1, sent);
        }
        // Held by someone else (or by an earlier run of this member).
        s.refused = 0;
        s.expiry_check = Some(received + ms(view.expires_in_ms) + TIMER_SLACK);
        if s.steal
            .is_some_and(|steal| Some(steal.key) != view.holder_session || steal.term != view.term)
        {
            s.steal = None;
        }
        self.watch_holder(s, view.holder_session).await?;
        if s.steal.is_none()
            && let Some((released, at)) = s.released
            && Some(released.key) == view.holder_session
        {
            self.schedule_steal(s, released, at, &view, received);
        }
        Ok(())
    }

    fn took_or_refused(
        &mut self,
        s: &mut Session,
        taken: bool,
        term: i64,
        sent: Instant,
    ) -> Result<(), LeaseError> {
        if taken {
            self.activate(s, term, sent);
            return Ok(());
        }
        s.refused += 1;
        if s.refused >= MAX_REFUSED {
            return Err(LeaseError::ConnectionLost {
                op: "acquire",
                target: self.ctx.target(),
                detail: format!(
                    "the lease looked free or ours {MAX_REFUSED} times but could not be taken; \
                     reopening the session"
                ),
            });
        }
        // Someone else was faster; look again shortly.
        s.expiry_check = Some(Instant::now() + Duration::from_millis(20));
        Ok(())
    }

    /// Plans an early take-over after the holder's session lock was seen free.
    fn schedule_steal(
        &mut self,
        s: &mut Session,
        released: Released,
        reported: Instant,
        view: &LeaseView,
        received: Instant,
    ) {
        let Some(key) = view.holder_session else {
            return;
        };
        if !s.store.caps().session_locks || s.steal_failures >= MAX_REFUSED {
            return;
        }
        let at = if s.store.caps().holder_blind_to_session_end {
            // MariaDB: also hold + margin after the holder's last renew.
            let renewed_age = view.renewed_age_ms.unwrap_or(0);
            received + ms(self.ctx.steal_after_ms - renewed_age) + TIMER_SLACK
        } else if released.observed_held {
            reported + TAKEOVER_GUARD
        } else {
            // Free at first look: when it ended is unknown, so only the TTL applies.
            return;
        };
        tracing::debug!(member = %self.config.member, term = view.term,
            "holder's session ended; planning take-over");
        s.steal = Some(Steal {
            at,
            term: view.term,
            key,
        });
    }

    async fn try_steal(&mut self, s: &mut Session, steal: Steal) -> Result<(), LeaseError> {
        if s.active.is_some() || !self.wants_lease() {
            return Ok(());
        }
        let sent = Instant::now();
        if s.store.steal(steal.term, steal.key).await? {
            tracing::info!(member = %self.config.member, term = steal.term + 1,
                "took over from a holder whose database session ended");
            self.activate(s, steal.term + 1, sent);
            Ok(())
        } else {
            s.steal_failures += 1;
            self.refresh(s).await
        }
    }

    async fn on_released(&mut self, s: &mut Session, released: Released) -> Result<(), LeaseError> {
        s.released = Some((released, Instant::now()));
        if s.active.is_some() {
            return Ok(());
        }
        // Fresh data for the decision (renewed_at on MariaDB; on release or
        // hand-over the row has changed).
        self.refresh(s).await
    }

    /// Points the waiter at `key`, interrupting a wait on another key.
    async fn watch_holder(&mut self, s: &mut Session, key: Option<i64>) -> Result<(), LeaseError> {
        let key = key.filter(|_| self.wants_lease());
        if let Some(waiter) = &s.waiter
            && let Some(backend_id) = waiter.set_target(key)
        {
            s.store.cancel_wait(backend_id).await?;
        }
        if key.is_none_or(|key| s.released.is_some_and(|(r, _)| r.key != key)) {
            s.released = None;
            s.steal_failures = 0;
        }
        Ok(())
    }

    fn activate(&mut self, s: &mut Session, term: i64, sent: Instant) {
        let until = self.until_after(s, sent);
        s.active = Some(Active { term, until });
        s.steal = None;
        s.expiry_check = None;
        s.released = None;
        s.refused = 0;
        s.steal_failures = 0;
        s.next_tick = sent + self.config.renew_interval;
        self.last_active_term = term;
        if let Some(waiter) = &s.waiter {
            // Our own key is never anyone's target: no wait to interrupt
            // matters once we are active.
            let _ = waiter.set_target(None);
        }
        tracing::info!(member = %self.config.member, term, "became active");
        self.publish_lease(Some(self.config.member.clone()), term, true);
        self.publish_role(Role::Active { term, until });
    }

    fn demote(&mut self, s: &mut Session, reason: &str) {
        if let Some(active) = s.active.take() {
            tracing::warn!(member = %self.config.member, term = active.term, reason,
                "demoted to standby");
            self.publish_role(Role::Standby);
        }
    }

    fn publish_lease(&self, holder: Option<String>, term: i64, live: bool) {
        self.status.send_modify(|st| {
            st.lease = Some(LeaseSnapshot { holder, term, live });
        });
    }

    fn publish_role(&self, role: Role) {
        self.role.send_if_modified(|current| {
            if *current == role {
                false
            } else {
                *current = role;
                true
            }
        });
    }

    async fn command(&mut self, s: &mut Session, command: Command) -> Result<(), LeaseError> {
        match command {
            Command::HandOver(target, reply) => {
                let result = self.hand_over(s, target).await;
                let _ = reply.send(result.clone());
                result.map(|_| ())
            }
            Command::Release(reply) => {
                self.ready = false;
                let result = self.release(s).await;
                let _ = reply.send(result.clone());
                result.map(|_| ())
            }
            Command::SetReady(ready, reply) => {
                self.ready = ready;
                let result = s.store.set_ready(ready).await;
                let _ = reply.send(result.clone());
                result?;
                if ready && s.active.is_none() {
                    self.refresh(s).await?;
                }
                Ok(())
            }
            Command::Members(reply) => {
                let result = s.store.members().await;
                let _ = reply.send(result.clone());
                result.map(|_| ())
            }
            Command::Shutdown(reply) => {
                // Handled by the caller; kept for completeness.
                self.stopping = true;
                self.shutdown_replies.push(reply);
                Ok(())
            }
        }
    }

    /// Ends this member's active period in every case: the caller's
    /// workload may already have stopped (it should, before asking). If a
    /// target is eligible it gets `term + 1`; otherwise this member goes on
    /// with a new term.
    async fn hand_over(
        &mut self,
        s: &mut Session,
        target: HandOverTarget,
    ) -> Result<HandOverOutcome, LeaseError> {
        let Some(active) = s.active else {
            return Ok(HandOverOutcome::NotHolder);
        };
        // Stop acting before the target can start.
        self.demote(s, "handing over");
        let chosen = match self.choose_target(s, &target).await {
            Ok(chosen) => chosen,
            Err(refused) => {
                // Back to work under a new term (the row is still ours).
                self.refresh(s).await?;
                return Ok(refused);
            }
        };
        if s.store.hand_over(active.term, &chosen).await? {
            tracing::info!(member = %self.config.member, to = %chosen, term = active.term + 1,
                "handed the lease over");
            self.publish_lease(Some(chosen.clone()), active.term + 1, true);
            s.expiry_check = Some(Instant::now());
            Ok(HandOverOutcome::HandedOver {
                to: chosen,
                term: active.term + 1,
            })
        } else {
            // Lost a race (target went stale, lease changed): take stock.
            self.refresh(s).await?;
            Ok(HandOverOutcome::NoEligibleTarget {
                reason: format!("{chosen:?} could not take over: the lease or the target changed"),
            })
        }
    }

    /// The member to hand over to, or why there is none.
    async fn choose_target(
        &mut self,
        s: &mut Session,
        target: &HandOverTarget,
    ) -> Result<String, HandOverOutcome> {
        let members = match s.store.members().await {
            Ok(members) => members,
            Err(error) => {
                return Err(HandOverOutcome::NoEligibleTarget {
                    reason: format!("cannot list the members: {error}"),
                });
            }
        };
        let me = self.config.member.as_str();
        let eligible =
            |m: &&MemberRow| m.member != me && m.kind == MemberKind::Member && m.ready && m.fresh;
        match target {
            HandOverTarget::Member(name) => match members.iter().find(|m| &m.member == name) {
                None => Err(HandOverOutcome::NoEligibleTarget {
                    reason: format!("{name:?} is not a member of this cluster"),
                }),
                Some(m) if !eligible(&m) => Err(HandOverOutcome::NoEligibleTarget {
                    reason: format!(
                        "{name:?} cannot take over (it is this member, an API server, not ready, \
                         or its heartbeat is older than {:?})",
                        self.config.freshness()
                    ),
                }),
                Some(m) => Ok(m.member.clone()),
            },
            HandOverTarget::Any => members
                .iter()
                .filter(eligible)
                .min_by_key(|m| m.heartbeat_age)
                .map(|m| m.member.clone())
                .ok_or_else(|| HandOverOutcome::NoEligibleTarget {
                    reason: "no other member is ready with a fresh heartbeat".to_owned(),
                }),
        }
    }

    async fn release(&mut self, s: &mut Session) -> Result<bool, LeaseError> {
        let released = match s.active {
            Some(active) => {
                self.demote(s, "releasing");
                let released = s.store.release(active.term).await?;
                if released {
                    tracing::info!(member = %self.config.member, term = active.term,
                        "released the lease");
                    self.publish_lease(None, active.term, false);
                }
                released
            }
            None => false,
        };
        s.expiry_check = None;
        s.steal = None;
        self.watch_holder(s, None).await?;
        s.store.set_ready(false).await?;
        Ok(released)
    }

    /// Clean end of a session: release if active, mark not ready.
    async fn close(&mut self, s: &mut Session) {
        if let Err(error) = self.release(s).await {
            tracing::warn!(member = %self.config.member, %error,
                "could not release the lease while stopping; it expires by itself");
        }
        self.demote(s, "stopping");
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
