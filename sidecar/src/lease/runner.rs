//! The runner: the elector's task. It opens database sessions (retrying
//! with back-off), waits for commands, session events, the waiter's reports
//! and timers, and hands each to `session.rs`, which asks `decide.rs` what to
//! do and runs the statements.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::config::LeaseConfig;
use super::decide::{self, Active, Steal};
use super::elector::{Command, ElectorStatus, HandOverOutcome, Role};
use super::error::LeaseError;
use super::store::{Ctx, LeaseView, SessionEvent, Store, WaiterConn};
use super::waiter::{Released, Waiter};

pub(crate) struct Runner {
    pub(super) config: LeaseConfig,
    pub(super) timing: decide::Timing,
    pub(super) ctx: Arc<Ctx>,
    pub(super) role: watch::Sender<Role>,
    pub(super) status: watch::Sender<ElectorStatus>,
    commands: mpsc::Receiver<Command>,
    pub(super) ready: bool,
    pub(super) stopping: bool,
    pub(super) shutdown_replies: Vec<oneshot::Sender<()>>,
    /// The last term this process was active in (0: never). A term is used
    /// for one active period only: after a demotion, even with the row still
    /// ours, we take a new term.
    pub(super) last_active_term: i64,
    /// Kubernetes reported nothing acting under this holder's term any more
    /// (`ElectorHandle::holder_gone`).
    pub(super) holder_gone: Option<(String, i64)>,
}

/// State of one database session.
pub(super) struct Session {
    pub(super) store: Store,
    pub(super) waiter: Option<Waiter>,
    released_rx: mpsc::UnboundedReceiver<Released>,
    pub(super) active: Option<Active>,
    /// The last lease view and the local instant its answer arrived.
    pub(super) view: Option<(LeaseView, Instant)>,
    pub(super) next_tick: Instant,
    pub(super) expiry_check: Option<Instant>,
    pub(super) steal: Option<Steal>,
    /// The waiter's last report and when it came.
    pub(super) released: Option<(Released, Instant)>,
    pub(super) refused: u32,
    pub(super) steal_failures: u32,
    pub(super) retry: Backoff,
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

impl Runner {
    pub(crate) fn new(
        config: LeaseConfig,
        ctx: Arc<Ctx>,
        role: watch::Sender<Role>,
        status: watch::Sender<ElectorStatus>,
        commands: mpsc::Receiver<Command>,
    ) -> Runner {
        Runner {
            ready: config.ready,
            timing: decide::Timing::new(&config),
            config,
            ctx,
            role,
            status,
            commands,
            stopping: false,
            shutdown_replies: Vec::new(),
            last_active_term: 0,
            holder_gone: None,
        }
    }

    pub(crate) async fn run(mut self) {
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
            Some(Command::HolderGone { member, term }) => {
                self.holder_gone = Some((member, term));
            }
            Some(Command::Look(reply)) => {
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
        if decide::deadline_passed(s.active, Instant::now()) {
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
}
