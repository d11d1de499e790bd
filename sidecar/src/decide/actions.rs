//! What [`super::decide`] asks the runner to do, in order. The order is the
//! point: e.g. the cockpit hears "standby" before the lease moves, and other
//! pods lose their active label before this one gets it.

use std::time::Duration;

use joc_ha_crds::v1alpha1::SwitchoverStatus;
use tokio::time::Instant;

/// The role label's two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Active,
    Standby,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Active => joc_ha_crds::names::ROLE_ACTIVE,
            Label::Standby => joc_ha_crds::names::ROLE_STANDBY,
        }
    }
}

/// What the cockpit container is told (role file, `GET /role`, command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Standby,
    /// Active with `term` until `until` (local monotonic clock).
    Active {
        term: i64,
        until: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `joc_ha_role`: 1 active, 0 standby.
    Role(i64),
    /// `joc_ha_lease_term`.
    LeaseTerm(i64),
    /// `joc_ha_takeovers`.
    Takeover,
    /// `joc_ha_switchovers{result}`.
    Switchover(&'static str),
    /// `joc_ha_joc_fenced{why}`.
    JocFenced(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// One effect. Those marked *awaited* answer with an
/// [`super::Outcome`] fed back to `decide` as [`super::Event::Done`]; an
/// awaited action is always the last of its batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Tell the cockpit its role.
    Publish(Report),
    /// Write a pod's role label (on this pod also its lease-term
    /// annotation, and the failsafe mark goes). Awaited when `report`;
    /// otherwise a failure is logged with `context`.
    Label {
        pod: String,
        label: Label,
        term: Option<i64>,
        report: bool,
        context: &'static str,
    },
    /// Awaited: mark this pod failsafe.
    MarkFailsafe,
    /// Awaited: read the failsafe mark of these pods from the API server.
    ReadFailsafeMarks {
        pods: Vec<String>,
    },
    /// Wait `period` from now (the former holder's last failsafe role report
    /// may be acted on until then), saying whether its mark went.
    WaitOutFailsafe {
        pod: String,
        period: Duration,
    },
    /// Awaited: list the cluster's pods from the API server itself.
    ListPodsNow,
    /// Awaited: wait until the elector's status changes or `until`.
    WaitForElector {
        until: Instant,
    },
    /// js7, awaited: read JOC's cluster tables.
    ReadJoc,
    /// js7: this member's JOC instance is (not) fresh, for `/readyz`.
    JocHealth {
        fresh: bool,
    },
    /// Set this member's readiness in the lease. Awaited when `report`.
    SetReady {
        ready: bool,
        report: bool,
    },
    /// js7: ask JOC to switch its active member `from` → `to` (member ids;
    /// `pod` is the target's pod, for the log). Awaited when `report`.
    RequestJocSwitch {
        from: String,
        to: String,
        pod: String,
        report: bool,
    },
    /// js7: write JOC's cluster heartbeat for this member's JOC, JOC's
    /// active member waiting for its first Controller (docs/joc-facts.md
    /// fact 9, `js7::keeps_waiting_heart_beat`); a failure is logged.
    KeepJocHeartbeat,
    /// js7: JOC's active member `member_id`'s JVM is gone (Kubernetes
    /// restarted or stopped its container): if JOC's cluster row still
    /// names it and its instance row still has `started_at` (no new JVM
    /// registered yet), hand the row to `successor` (its heartbeat exceeded
    /// at once, a switch request to the successor) or, without one, delete
    /// it as JOC's clean shutdown would; JOC's instances act at their next
    /// poll instead of waiting out the heartbeat timeout
    /// (`JocTables::release_gone_active`). A failure is logged.
    ReleaseGoneJoc {
        member_id: String,
        started_at: String,
        successor: Option<String>,
    },
    /// js7: take away a left-over switch request naming `switch_member_id`
    /// (only if it still does); `why` for the log.
    ClearJocSwitch {
        switch_member_id: String,
        why: &'static str,
    },
    /// js7, awaited: fence this pod's JOC: SIGKILL its JVM, confirm it gone
    /// within a bound, then write what JOC's clean shutdown writes
    /// (docs/joc-facts.md fact 12). `why` for the log; `end_container`:
    /// its container's processes too (see `FenceWhy::ends_container`);
    /// `switch_to`: a member id to name in JOC's switch request once the
    /// JVM is gone, before those writes (the request written before the
    /// fence may have failed behind the hung JOC's row lock).
    FenceJoc {
        why: String,
        end_container: bool,
        switch_to: Option<String>,
    },
    /// js7: end the processes of the container a fence left running
    /// (`FenceDone::container_left`), so that the kubelet starts it anew.
    EndJocContainer,
    /// Awaited: remove the switch-over annotation if it still says `value`.
    ClearSwitchover {
        value: String,
    },
    /// Put a taken switch-over request back (the annotation set to `value`
    /// if none is there: a newer request wins), for the next holder; a
    /// failure is logged.
    RestoreSwitchover {
        value: String,
    },
    /// Awaited: read the lease's member rows.
    ReadMembers,
    /// Awaited: read this pod from the API server.
    ReadOwnPod,
    /// Awaited: hand the lease to `target`.
    HandOver {
        target: String,
    },
    /// Release the lease (a failure is logged).
    Release,
    /// Tell the elector that Kubernetes reports every process gone that
    /// could act under `member`'s lease `term` (`decide/gone.rs`).
    ConfirmHolderGone {
        member: String,
        term: i64,
    },
    /// Awaited: ask the elector to read the lease now: `pod` carries the
    /// active label under a holder this member has not read.
    LookAtLease {
        pod: String,
    },
    /// Awaited: wait up to `bound` for `target` to carry the active label,
    /// or for the lease to come back to this member, whichever is first.
    WaitForLabel {
        target: String,
        bound: Duration,
        /// The term the target received: the lease is back if this member
        /// holds a later one.
        handed_term: Option<i64>,
    },
    /// js7, stepping down: wait up to `period` for JOC's active member to
    /// leave this one.
    WaitForJocToLeave {
        period: Duration,
    },
    /// Record a switch-over in the JocCluster's status.
    RecordSwitchover(SwitchoverStatus),
    /// An Event on the JocCluster.
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
    Metric(Metric),
    Log(Level, String),
    /// Stop the sidecar.
    Exit,
}

impl Action {
    /// Whether the runner must answer this action with an outcome.
    pub fn awaits(&self) -> bool {
        match self {
            Action::Label { report, .. }
            | Action::SetReady { report, .. }
            | Action::RequestJocSwitch { report, .. } => *report,
            Action::MarkFailsafe
            | Action::ReadFailsafeMarks { .. }
            | Action::ListPodsNow
            | Action::WaitForElector { .. }
            | Action::ReadJoc
            | Action::FenceJoc { .. }
            | Action::ClearSwitchover { .. }
            | Action::ReadMembers
            | Action::ReadOwnPod
            | Action::LookAtLease { .. }
            | Action::HandOver { .. }
            | Action::WaitForLabel { .. } => true,
            _ => false,
        }
    }
}
