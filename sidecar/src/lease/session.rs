//! What the runner does within one database session: it gathers the local
//! facts, asks `decide.rs` what to do, and runs the statements that asks
//! for; then publishes the role and status.

use std::time::Duration;

use tokio::time::Instant;

use super::config::MemberKind;
use super::decide::{self, Active, Next, Renewed, Steal};
use super::elector::{Command, HandOverOutcome, HandOverTarget, LeaseSnapshot, Role};
use super::error::LeaseError;
use super::runner::{Runner, Session};
use super::store::LeaseView;
use super::waiter::Released;

impl Runner {
    /// What this member knows locally, for a decision.
    fn local<'a>(&'a self, s: &Session) -> decide::Local<'a> {
        decide::Local {
            member: &self.config.member,
            key: s.store.key(),
            wants_lease: self.wants_lease(),
            active: s.active,
            last_active_term: self.last_active_term,
            steal: s.steal,
            released: s.released,
            steal_failures: s.steal_failures,
            holder_gone: self
                .holder_gone
                .as_ref()
                .map(|(member, term)| (member.as_str(), *term)),
            caps: s.store.caps(),
            timing: self.timing,
        }
    }

    fn wants_lease(&self) -> bool {
        self.ready && self.config.kind == MemberKind::Member
    }

    /// Renew (holder) or heartbeat (everyone else), once per renew interval.
    pub(super) async fn tick(&mut self, s: &mut Session) -> Result<(), LeaseError> {
        let Some(active) = s.active else {
            s.next_tick = Instant::now() + self.config.renew_interval;
            return match s.store.heartbeat(self.ready).await? {
                Some(view) => self.on_view(s, view, Instant::now()).await,
                None => {
                    let age = s.view.as_ref().map(|(_, at)| at.elapsed());
                    let caps = s.store.caps();
                    if decide::standby_reads_lease(
                        caps,
                        self.config.kind,
                        self.ready,
                        age,
                        &self.timing,
                    ) {
                        self.refresh(s).await
                    } else {
                        Ok(())
                    }
                }
            };
        };
        let sent = Instant::now();
        let timeout = active
            .until
            .saturating_duration_since(sent)
            .max(Duration::from_millis(1));
        let renewed = s.store.renew(active.term, timeout).await?;
        let answered = Instant::now();
        match decide::after_renew(renewed, active, sent, answered, &self.local(s)) {
            Renewed::Extend(extended) => {
                let took = answered - sent;
                self.status
                    .send_modify(|st| st.last_renew_latency = Some(took));
                s.retry.reset();
                s.next_tick = sent + self.config.renew_interval;
                s.active = Some(extended);
                self.publish_role(Role::Active {
                    term: extended.term,
                    until: extended.until,
                });
                Ok(())
            }
            Renewed::Demote(reason) => {
                self.demote(s, reason);
                if !renewed {
                    s.next_tick = Instant::now() + self.config.renew_interval;
                }
                self.refresh(s).await
            }
        }
    }

    /// Reads the lease (creating the row if it vanished) and reacts.
    pub(super) async fn refresh(&mut self, s: &mut Session) -> Result<(), LeaseError> {
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

    /// Publishes the view, decides, and runs what the decision asks for.
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
        let decision = decide::on_view(&view, received, &self.local(s));
        if let Some(reason) = decision.demote {
            self.demote(s, reason);
        }
        match decision.next {
            Next::Keep => Ok(()),
            Next::StandBack { release } => {
                s.expiry_check = None;
                s.steal = None;
                self.watch_holder(s, None).await?;
                if let Some(term) = release {
                    s.store.release(term).await?;
                }
                Ok(())
            }
            Next::Confirm { term } => {
                self.watch_holder(s, None).await?;
                let sent = Instant::now();
                let taken = s.store.renew(term, self.ctx.op_timeout).await?;
                self.took_or_refused(s, taken, term, sent)
            }
            Next::Acquire { term } => {
                if !view.is_live() {
                    s.steal = None;
                }
                self.watch_holder(s, None).await?;
                let sent = Instant::now();
                let taken = s.store.acquire(term).await?;
                self.took_or_refused(s, taken, term + 1, sent)
            }
            Next::Follow {
                check_at, steal, ..
            } => {
                s.refused = 0;
                s.expiry_check = Some(check_at);
                self.watch_holder(s, decision.next.watch()).await?;
                if steal.is_some() && s.steal != steal {
                    tracing::debug!(member = %self.config.member, term = view.term,
                        "holder's session ended; planning take-over");
                }
                s.steal = steal;
                Ok(())
            }
        }
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
        match decide::after_refused(s.refused, Instant::now()) {
            // Someone else was faster; look again shortly.
            Some(at) => {
                s.expiry_check = Some(at);
                Ok(())
            }
            None => Err(LeaseError::ConnectionLost {
                op: "acquire",
                target: self.ctx.target(),
                detail: format!(
                    "the lease looked free or ours {} times but could not be taken; \
                     reopening the session",
                    decide::MAX_REFUSED
                ),
            }),
        }
    }

    pub(super) async fn try_steal(
        &mut self,
        s: &mut Session,
        steal: Steal,
    ) -> Result<(), LeaseError> {
        if s.active.is_some() || !self.wants_lease() {
            return Ok(());
        }
        let sent = Instant::now();
        if s.store
            .steal(steal.term, steal.key, steal.confirmed)
            .await?
        {
            tracing::info!(member = %self.config.member, term = steal.term + 1,
                confirmed_gone = steal.confirmed,
                "took over from a holder whose database session ended");
            self.activate(s, steal.term + 1, sent);
            Ok(())
        } else {
            s.steal_failures += 1;
            self.refresh(s).await
        }
    }

    pub(super) async fn on_released(
        &mut self,
        s: &mut Session,
        released: Released,
    ) -> Result<(), LeaseError> {
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
        let until = decide::valid_until(s.store.caps(), &self.timing, sent);
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

    pub(super) fn demote(&mut self, s: &mut Session, reason: &str) {
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

    pub(super) fn publish_role(&self, role: Role) {
        self.role.send_if_modified(|current| {
            if *current == role {
                false
            } else {
                *current = role;
                true
            }
        });
    }

    pub(super) async fn command(
        &mut self,
        s: &mut Session,
        command: Command,
    ) -> Result<(), LeaseError> {
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
            Command::HolderGone { member, term } => {
                self.holder_gone = Some((member, term));
                if s.active.is_none() && s.released.is_some() {
                    // Plan the take-over anew with this word.
                    self.refresh(s).await
                } else {
                    Ok(())
                }
            }
            Command::Look(reply) => {
                let result = if s.active.is_none() {
                    self.refresh(s).await
                } else {
                    Ok(())
                };
                let _ = reply.send(result.clone());
                result
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
        let chosen = match s.store.members().await {
            Ok(members) => decide::hand_over_target(&members, &self.config.member, &target),
            Err(error) => Err(HandOverOutcome::NoEligibleTarget {
                reason: format!("cannot list the members: {error}"),
            }),
        };
        let chosen = match chosen {
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
    pub(super) async fn close(&mut self, s: &mut Session) {
        if let Err(error) = self.release(s).await {
            tracing::warn!(member = %self.config.member, %error,
                "could not release the lease while stopping; it expires by itself");
        }
        self.demote(s, "stopping");
    }
}
