//! The elector's decisions as pure functions of what it knows: the lease as
//! the database last showed it ([`LeaseView`], judged by database time) and
//! local facts ([`Local`]: the monotonic clock, this member's active period,
//! what the waiter reported). The runner (`runner.rs`, `session.rs`)
//! gathers these, runs the statements a decision asks for and feeds the
//! answers back. Nothing here does I/O or reads a clock.

use std::time::Duration;

use tokio::time::Instant;

use super::config::{LeaseConfig, MemberKind};
use super::elector::{HandOverOutcome, HandOverTarget, TAKEOVER_GUARD};
use super::store::{Capabilities, LeaseView, MemberRow};
use super::waiter::Released;
use crate::eligibility::{self, Candidate, Target};
use joc_ha_crds::names::{COMPONENT_API_SERVER, COMPONENT_MEMBER};

/// Slack added to timers derived from database times.
pub(crate) const TIMER_SLACK: Duration = Duration::from_millis(3);
/// After this many refused attempts on a lease that looked free, the session
/// is assumed broken (its session lock check fails) and reopened.
pub(crate) const MAX_REFUSED: u32 = 3;
/// How soon to look again after someone else was faster.
pub(crate) const RETRY_AFTER_REFUSAL: Duration = Duration::from_millis(20);

/// This member's active period: fencing token and local deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Active {
    pub term: i64,
    pub until: Instant,
}

/// A planned early take-over from a holder whose session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steal {
    pub at: Instant,
    pub term: i64,
    pub key: i64,
    /// Kubernetes reported the holder's processes gone: no wait for a
    /// holder blind to its session's end.
    pub confirmed: bool,
}

/// The timing rules (see [`LeaseConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub ttl: Duration,
    pub renew_interval: Duration,
    /// How long a successful renew lets the holder act: `ttl - margin`.
    pub validity: Duration,
    /// Products whose holder is blind to its own session's end: the role
    /// also ends this long after the last verified renew.
    pub hold: Duration,
    /// Such products: a standby may take over this long after the holder's
    /// last renew once its session lock is free (`hold + margin`).
    pub steal_after: Duration,
}

impl Timing {
    pub(crate) fn new(config: &LeaseConfig) -> Timing {
        Timing {
            ttl: config.ttl,
            renew_interval: config.renew_interval,
            validity: config.validity(),
            hold: config.hold(),
            steal_after: config.hold() + config.margin(),
        }
    }
}

/// What the elector knows locally when it decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local<'a> {
    pub member: &'a str,
    /// This session's key.
    pub key: i64,
    /// Ready, and a member (not an API server).
    pub wants_lease: bool,
    pub active: Option<Active>,
    /// The last term this process was active in (0: never). A term serves
    /// one active period only.
    pub last_active_term: i64,
    pub steal: Option<Steal>,
    /// The waiter's last report and when it came.
    pub released: Option<(Released, Instant)>,
    pub steal_failures: u32,
    /// Kubernetes reported nothing acting under this member's lease term
    /// any more.
    pub holder_gone: Option<(&'a str, i64)>,
    pub caps: Capabilities,
    pub timing: Timing,
}

impl Local<'_> {
    /// Whether Kubernetes confirmed the holder of `view` gone.
    fn holder_confirmed_gone(&self, view: &LeaseView) -> bool {
        self.holder_gone.is_some_and(|(member, term)| {
            view.holder.as_deref() == Some(member) && view.term == term
        })
    }
}

/// What to do after reading the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Our term is confirmed: nothing to do.
    Keep,
    /// This member may not hold the lease (not ready, or an API server):
    /// stop watching, and release the row at `release` if it is ours.
    StandBack { release: Option<i64> },
    /// Free, expired, or ours from an earlier active period: `acquire(term)`,
    /// then active under `term + 1`.
    Acquire { term: i64 },
    /// Handed over to us: confirm with `renew(term)`, active under `term`.
    Confirm { term: i64 },
    /// Someone else holds it: watch its session lock, look again at its
    /// expiry (database time, carried over to the local clock), and take over
    /// early at `steal` if one is planned.
    Follow {
        holder_key: Option<i64>,
        check_at: Instant,
        steal: Option<Steal>,
    },
}

impl Next {
    /// The session key the waiter should block on.
    pub(crate) fn watch(&self) -> Option<i64> {
        match self {
            Next::Follow { holder_key, .. } => *holder_key,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Stop acting first (the view does not confirm our term).
    pub demote: Option<&'static str>,
    pub next: Next,
}

/// The decision on a lease view that arrived at `received`.
pub(crate) fn on_view(view: &LeaseView, received: Instant, local: &Local<'_>) -> Decision {
    let mine =
        view.holder.as_deref() == Some(local.member) && view.holder_session == Some(local.key);
    let live = view.is_live();
    let mut demote = None;
    if let Some(active) = local.active {
        if mine && view.term == active.term && live {
            return Decision {
                demote: None,
                next: Next::Keep,
            };
        }
        demote = Some("the lease changed hands");
    }
    let next = if !local.wants_lease {
        // Ours but we may not act: let others have it.
        Next::StandBack {
            release: (mine && live).then_some(view.term),
        }
    } else if mine && live && view.term > local.last_active_term {
        Next::Confirm { term: view.term }
    } else if mine || !live {
        // Still ours after a demotion (a new active period gets a new
        // term), or free or expired.
        Next::Acquire { term: view.term }
    } else {
        let planned = local
            .steal
            .filter(|steal| Some(steal.key) == view.holder_session && steal.term == view.term)
            // Kubernetes' word after the plan came supersedes it.
            .filter(|steal| steal.confirmed || !local.holder_confirmed_gone(view));
        let steal = planned.or_else(|| {
            let (released, reported) = local.released?;
            (Some(released.key) == view.holder_session)
                .then(|| plan_steal(released, reported, view, received, local))
                .flatten()
        });
        Next::Follow {
            holder_key: view.holder_session,
            check_at: received + ms(view.expires_in_ms) + TIMER_SLACK,
            steal,
        }
    };
    Decision { demote, next }
}

/// When to take over early after the holder's session lock was seen free,
/// or `None` when only the TTL applies.
pub(crate) fn plan_steal(
    released: Released,
    reported: Instant,
    view: &LeaseView,
    received: Instant,
    local: &Local<'_>,
) -> Option<Steal> {
    let key = view.holder_session?;
    if !local.caps.session_locks || local.steal_failures >= MAX_REFUSED {
        return None;
    }
    if local.holder_confirmed_gone(view) {
        // Its session ended and Kubernetes reports its processes gone:
        // nobody acts under that term, whenever the session ended.
        return Some(Steal {
            at: reported,
            term: view.term,
            key,
            confirmed: true,
        });
    }
    let at = if local.caps.holder_blind_to_session_end {
        // Also hold + margin after the holder's last renew (by database
        // time; the statement checks it again).
        let steal_after_ms =
            i64::try_from(local.timing.steal_after.as_millis()).unwrap_or(i64::MAX);
        received + ms(steal_after_ms.saturating_sub(view.renewed_age_ms.unwrap_or(0))) + TIMER_SLACK
    } else if released.observed_held {
        reported + TAKEOVER_GUARD
    } else {
        // Free at first look: when it ended is unknown, so only the TTL applies.
        return None;
    };
    Some(Steal {
        at,
        term: view.term,
        key,
        confirmed: false,
    })
}

/// How long a renew (or acquire) sent at `sent` that succeeded lets the
/// holder act.
pub(crate) fn valid_until(caps: Capabilities, timing: &Timing, sent: Instant) -> Instant {
    let until = sent + timing.validity;
    if caps.holder_blind_to_session_end {
        until.min(sent + timing.hold)
    } else {
        until
    }
}

/// The holder must stop: its local deadline has passed.
pub(crate) fn deadline_passed(active: Option<Active>, now: Instant) -> bool {
    active.is_some_and(|active| now >= active.until)
}

/// What a renew's answer means for the active period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// Act on until the new deadline.
    Extend(Active),
    /// Stop now and read the lease.
    Demote(&'static str),
}

/// The answer `renewed` to a renew sent at `sent`, seen at `answered`.
pub(crate) fn after_renew(
    renewed: bool,
    active: Active,
    sent: Instant,
    answered: Instant,
    local: &Local<'_>,
) -> Renewed {
    if !renewed {
        Renewed::Demote("the renew was refused: the lease changed hands")
    } else if answered >= active.until {
        // Too late: the workload has stopped at the old deadline. A new
        // active period needs a new term.
        Renewed::Demote("the renew succeeded only after the local deadline")
    } else {
        Renewed::Extend(Active {
            term: active.term,
            until: valid_until(local.caps, &local.timing, sent),
        })
    }
}

/// After a refused acquire: when to look again, or `None` when the session
/// is to be reopened (`refused` attempts in a row).
pub(crate) fn after_refused(refused: u32, now: Instant) -> Option<Instant> {
    (refused < MAX_REFUSED).then_some(now + RETRY_AFTER_REFUSAL)
}

/// Whether a standby's heartbeat that did not return the lease must be
/// followed by a read. Products whose heartbeat returns the row read only
/// when it was missing; the others read when something happens and at the
/// observed expiry, besides that once per TTL, or every tick for a member
/// standing back after a release (so it learns soon that someone else took
/// over).
pub(crate) fn standby_reads_lease(
    caps: Capabilities,
    kind: MemberKind,
    ready: bool,
    last_view_age: Option<Duration>,
    timing: &Timing,
) -> bool {
    if caps.heartbeat_reads_lease {
        return true;
    }
    let every = if kind == MemberKind::Member && !ready {
        timing.renew_interval
    } else {
        timing.ttl
    };
    last_view_age.is_none_or(|age| age >= every)
}

/// A lease member as the shared eligibility rule sees it: the lease knows
/// its kind, readiness and heartbeat, not its pod (`pod: None`).
fn candidate(member: &MemberRow) -> Candidate {
    Candidate {
        name: member.member.clone(),
        component: Some(
            match member.kind {
                MemberKind::Member => COMPONENT_MEMBER,
                MemberKind::ApiServer => COMPONENT_API_SERVER,
            }
            .to_owned(),
        ),
        lease_ready: Some(member.ready),
        heartbeat_fresh: member.fresh,
        pod: None,
    }
}

/// The member to hand over to, or why there is none: the one rule and the
/// one `any` policy of [`crate::eligibility`], which the sidecar's own check
/// applies too (with the pods' state added).
pub(crate) fn hand_over_target(
    members: &[MemberRow],
    me: &str,
    target: &HandOverTarget,
) -> Result<String, HandOverOutcome> {
    let target = match target {
        HandOverTarget::Member(name) => Target::Pod(name.clone()),
        HandOverTarget::Any => Target::Any,
    };
    let candidates: Vec<Candidate> = members.iter().map(candidate).collect();
    eligibility::choose(&target, me, &candidates)
        .map_err(|reason| HandOverOutcome::NoEligibleTarget { reason })
}

fn ms(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
