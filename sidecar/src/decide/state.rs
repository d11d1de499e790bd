//! What the sidecar remembers between events: [`State`], and in js7 mode
//! [`JocState`].

use std::collections::VecDeque;
use std::time::Duration;

use super::{Action, Flow, Pending, Settings, Step};

/// What the sidecar remembers between events.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub settings: Settings,
    /// The term we hold and have labeled for (js7: hold, while the label
    /// waits for JOC), while active.
    pub active_term: Option<i64>,
    /// Stepped down (this pod is being deleted, or SIGTERM): the lease is
    /// not taken again, unless the pod turns out not to be stopping (see
    /// [`State::step_down_bound`]).
    pub stepped_down: bool,
    /// When it stepped down.
    pub stepped_down_at: Option<tokio::time::Instant>,
    /// Why this pod is not behind the active Service (a label the selector
    /// needs was removed, or it was orphaned): it gave up the lease and
    /// does not take it while this lasts.
    pub left_service: Option<String>,
    /// The user fenced this member (`kubectl joc fence`): it gave up the
    /// lease and neither takes nor receives it while this lasts.
    pub fenced: bool,
    /// Why `joc-ha.dev/fenced-members` could not be read, once logged.
    pub fencing_unreadable: Option<String>,
    /// Active in failsafe mode until then: the database is down for
    /// everyone and the API server shows no other active pod.
    pub failsafe_until: Option<tokio::time::Instant>,
    /// js7 mode: agreement with JOC's own active member.
    pub joc: Option<JocState>,
    /// Another member's live lease term, to learn from Kubernetes that its
    /// processes are gone.
    pub holder_seen: Option<HolderSeen>,
    /// The pod labeled active for which the lease was last read at once.
    pub looked_for_label: Option<String>,
    /// Steps still to run for the current event, first first.
    pub(super) agenda: VecDeque<Step>,
}

/// Another member's lease term as first seen, with its pod's container
/// runs then (`decide/gone.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderSeen {
    pub member: String,
    pub term: i64,
    pub sidecar_run: crate::js7::ContainerRun,
    pub joc_run: crate::js7::ContainerRun,
    /// The elector was told that nothing acts under this term any more.
    pub confirmed: bool,
}

/// JOC's active member as seen at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSeen {
    pub member_id: String,
    pub pod: String,
    pub run: crate::js7::ContainerRun,
    /// Its `JOC_INSTANCES.STARTED_AT` as text: a new JVM rewrites it.
    pub started_at: Option<String>,
}

/// js7 mode: what the sidecar knows of JOC's cluster service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JocState {
    /// JOC's active member at the previous look, to tell a move JOC made by
    /// itself from one we asked for.
    pub previous_active: Option<String>,
    /// The lease term this member held at that look (None: standby).
    pub previous_term: Option<i64>,
    /// The readiness last set in the lease (our JOC instance is fresh).
    pub ready: Option<bool>,
    /// JOC runs this member active: the holder may carry the label.
    pub confirmed: bool,
    /// The last thing said about waiting or failing, to say it once.
    pub last_note: Option<String>,
    /// This member's JOC row when the current `joc` container run was first
    /// seen: only a heartbeat after it counts (fact 22, `js7::own_health`).
    pub baseline: Option<crate::js7::HealthBaseline>,
    /// JOC's `MEMBER_ID` named this member while its instance heartbeated,
    /// since its JVM was last fenced or found gone (`decide/fence.rs`).
    pub was_active: bool,
    /// Since when JOC's `MEMBER_ID` names this member while it does not
    /// hold the lease.
    pub active_without_lease_since: Option<tokio::time::Instant>,
    /// This member's instance heartbeat age at the previous look, and when.
    pub own_age: Option<(tokio::time::Instant, i64)>,
    /// The last look that saw this member's JOC write its heartbeat (its
    /// age went down): a live JVM, not a dead one's fresh row (fact 22).
    pub own_write_seen_at: Option<tokio::time::Instant>,
    /// At the previous look, this member's instance heartbeat was written
    /// by the JOC process now running (`js7::own_health`, fact 22): as good a
    /// proof of a live JVM as a write seen between two looks, and one that
    /// does not depend on the heartbeat's age moving in whole seconds.
    pub own_fresh: bool,
    /// This sidecar writes JOC's cluster heartbeat for its JOC, active and
    /// waiting for its first Controller (docs/joc-facts.md fact 9).
    pub keeping_waiting: bool,
    /// The first look that saw a Controller registered while this sidecar
    /// kept the heartbeat: JOC wakes within its retry of that.
    pub controller_seen_at: Option<tokio::time::Instant>,
    /// JOC's active member at the previous look, with its pod's `joc` run
    /// and instance `STARTED_AT` then.
    pub active_seen: Option<ActiveSeen>,
    /// JOC's active member whose JVM Kubernetes reported gone (its
    /// container restarted or stopped) while `MEMBER_ID` still names it:
    /// the holder releases its row ([`Action::ReleaseGoneJoc`]).
    pub gone_active: Option<ActiveSeen>,
    /// At the last look that could read JOC's tables, this member's live
    /// JOC was JOC's active member and another member's JOC stood ready:
    /// when, and how old JOC's cluster heartbeat was then.
    pub active_at_last_read: Option<(tokio::time::Instant, Duration)>,
    /// When this sidecar last looked at JOC, to notice its own freeze.
    pub last_look: Option<tokio::time::Instant>,
    /// This sidecar did not run for this long before its last look (kept
    /// until a JOC read judged it).
    pub resumed_after: Option<Duration>,
    /// A fence while the database was gone left JOC's container running
    /// (`FenceWhy::ends_container`): it is ended at the next read that
    /// succeeds, when JOC can start again.
    pub container_left: bool,
}

impl State {
    pub fn new(settings: Settings) -> State {
        State {
            joc: settings.joc.as_ref().map(|_| JocState::default()),
            settings,
            active_term: None,
            stepped_down: false,
            stepped_down_at: None,
            left_service: None,
            fenced: false,
            fencing_unreadable: None,
            failsafe_until: None,
            holder_seen: None,
            looked_for_label: None,
            agenda: VecDeque::new(),
        }
    }

    /// js7 mode: the holder waits for JOC to confirm it, so it looks more
    /// often than once per renew interval.
    pub fn waiting_for_joc(&self) -> bool {
        self.active_term.is_some() && self.joc.as_ref().is_some_and(|j| !j.confirmed)
    }

    /// Whether the holder may carry the label: always in generic mode; in
    /// js7 mode once JOC runs this member active.
    pub(super) fn joc_confirmed(&self) -> bool {
        self.joc.as_ref().is_none_or(|joc| joc.confirmed)
    }

    /// Whether this member may hold the lease now.
    pub fn may_hold(&self) -> bool {
        !self.stepped_down && self.left_service.is_none() && !self.fenced
    }

    /// How long after stepping down a member whose pod is neither being
    /// deleted nor stopped takes part in the lease again: a deleted pod
    /// shows its deletionTimestamp at once and keeps it, and SIGTERM ends
    /// the process, so by then the step-down was not a stop.
    pub fn step_down_bound(&self) -> Duration {
        self.switchover_bound() * 2
    }

    /// Whether an awaited action is outstanding.
    pub fn is_waiting(&self) -> bool {
        matches!(self.agenda.front(), Some(Step::Await(_)))
    }

    /// Runs `steps` next, in this order, before what was queued.
    pub(super) fn next(&mut self, steps: impl IntoIterator<Item = Step>) {
        let steps: Vec<Step> = steps.into_iter().collect();
        for step in steps.into_iter().rev() {
            self.agenda.push_front(step);
        }
    }

    /// Parks `pending` at the head of the agenda and emits `action`, which
    /// the runner answers.
    pub(super) fn wait(&mut self, pending: Pending, action: Action, out: &mut Vec<Action>) -> Flow {
        debug_assert!(action.awaits(), "{action:?} is not awaited");
        self.agenda.push_front(Step::Await(pending));
        out.push(action);
        Flow::Suspend
    }

    /// How long a switch-over may take until the target is labeled: the
    /// lease hand-over, and in js7 mode JOC's switch (two polls).
    pub(super) fn switchover_bound(&self) -> Duration {
        let joc = self
            .settings
            .joc
            .as_ref()
            .map_or(Duration::ZERO, |j| j.polling_interval * 3);
        self.settings.lease_ttl * 2 + joc
    }
}
