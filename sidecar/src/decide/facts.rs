//! What [`super::decide`] knows: the settings (fixed for the process), the
//! facts (a snapshot the runner takes before every call: no I/O happens in
//! `decide`, and time is one of the facts), and the events it answers.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::JocSettings;
use crate::js7::{ContainerRun, JocView};
use crate::lease::{HandOverOutcome, Role};

/// Fixed for the sidecar's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This pod's name (and its member name in the lease).
    pub me: String,
    /// The JocCluster's name (`joc-ha.dev/cluster` of its pods).
    pub cluster: String,
    /// How long a renew lets the holder act (TTL − margin, from the lease).
    pub lease_validity: Duration,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    /// js7 mode: who this member is to JOC and JOC's timings.
    pub joc: Option<JocSettings>,
}

/// A snapshot of everything `decide` may look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Local monotonic time (the clock the lease's deadlines use).
    pub now: Instant,
    /// Wall-clock time, only for status timestamps people read.
    pub wall_now: jiff::Timestamp,
    /// The elector's current role for this member.
    pub role: Role,
    pub elector: ElectorFacts,
    /// Every pod of the cluster (members and API servers), from the cache.
    pub pods: Vec<PodFacts>,
    /// The JocCluster, from the cache; `None` until it is seen.
    pub cluster: Option<ClusterFacts>,
    /// This pod, from a watch by name (so that a removed label does not
    /// hide it); `None` until it is seen.
    pub own: Option<OwnPodFacts>,
}

impl Facts {
    /// The run of `pod`'s `joc` container, if the pod is in the cache.
    pub fn joc_run_of(&self, pod: &str) -> Option<&ContainerRun> {
        self.pods.iter().find(|p| p.name == pod).map(|p| &p.joc_run)
    }
}

/// This sidecar's own pod, as the API server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnPodFacts {
    /// Has a deletionTimestamp: only who may delete the pod can set it.
    pub terminating: bool,
    /// `joc-ha.dev/cluster`.
    pub cluster: Option<String>,
    /// `joc-ha.dev/component`.
    pub component: Option<String>,
    /// A controller (its StatefulSet) owns it; a pod whose labels left the
    /// StatefulSet's selector is orphaned.
    pub controlled: bool,
    /// The current run of its `joc` container (js7 readiness, fact 22).
    pub joc_run: ContainerRun,
}

impl OwnPodFacts {
    /// Why the pod is not behind the active Service (whose selector is the
    /// cluster and component labels plus the role), or `None` if it is.
    pub fn unroutable_because(&self, cluster: &str) -> Option<String> {
        use joc_ha_crds::names::{COMPONENT_MEMBER, LABEL_CLUSTER, LABEL_COMPONENT};
        if self.cluster.as_deref() != Some(cluster) {
            Some(format!(
                "its label {LABEL_CLUSTER} is {:?}, not {cluster:?}",
                self.cluster
            ))
        } else if self.component.as_deref() != Some(COMPONENT_MEMBER) {
            Some(format!(
                "its label {LABEL_COMPONENT} is {:?}, not {COMPONENT_MEMBER:?}",
                self.component
            ))
        } else if !self.controlled {
            Some("no StatefulSet owns it any more (orphaned)".to_owned())
        } else {
            None
        }
    }
}

/// The elector's health as last published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectorFacts {
    /// A session with the database is open.
    pub connected: bool,
    /// The last statement failed.
    pub failing: bool,
    /// The lease as last read names this member as holder.
    pub holder_is_me: bool,
    /// The lease's holder and term as last read, while it was live.
    pub live_holder: Option<(String, i64)>,
}

/// One pod of the cluster, as far as decisions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    /// `joc-ha.dev/component`.
    pub component: Option<String>,
    /// `joc-ha.dev/role`.
    pub role: Option<String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// Carries the failsafe mark (`joc-ha.dev/failsafe`): its holder stays
    /// active while the database is down for everyone.
    pub failsafe: bool,
    /// The current run of its `joc` container, as the kubelet reports it.
    pub joc_run: ContainerRun,
    /// The current run of its sidecar container.
    pub sidecar_run: ContainerRun,
}

impl PodFacts {
    /// Only member pods take part in routing.
    pub fn is_member(&self) -> bool {
        self.component.as_deref() == Some(joc_ha_crds::names::COMPONENT_MEMBER)
    }

    pub fn is_labeled_active(&self) -> bool {
        self.role.as_deref() == Some(joc_ha_crds::names::ROLE_ACTIVE)
    }
}

/// The JocCluster as far as the sidecar cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The pending `joc-ha.dev/switchover-to` annotation.
    pub switchover_to: Option<String>,
    /// The members named in `joc-ha.dev/fenced-members`, or why the
    /// annotation cannot be read (then nothing changes).
    pub fenced: Result<BTreeSet<String>, String>,
}

impl Default for ClusterFacts {
    fn default() -> Self {
        ClusterFacts {
            switchover_to: None,
            fenced: Ok(BTreeSet::new()),
        }
    }
}

impl ClusterFacts {
    /// Whether the user fenced `pod` (a malformed list fences no one new:
    /// its readers keep what they had).
    pub fn is_fenced(&self, pod: &str) -> bool {
        self.fenced.as_ref().is_ok_and(|f| f.contains(pod))
    }
}

/// A lease member row as the holder reads it for a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub name: String,
    /// `ready` in the lease (js7: its JOC instance heartbeats).
    pub ready: bool,
    /// Heartbeat younger than the TTL.
    pub fresh: bool,
}

/// What happened. Inputs come from the world; a [`Outcome`] answers the
/// last action of the previous call (see [`super::Action::awaits`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The renew-interval timer.
    Tick,
    /// The elector published a new role.
    LeaseChanged,
    /// The lease elector stopped for good.
    ElectorStopped,
    /// The cluster's pods changed (cache).
    PodsChanged,
    /// The JocCluster changed (cache).
    ClusterChanged,
    /// `GET /prestop`: the cockpit's preStop hook waits for the hand-over
    /// (anyone who reaches the port can call it, so it triggers nothing by
    /// itself: only this pod's deletion or SIGTERM makes the sidecar step
    /// down).
    Prestop,
    Sigterm,
    /// js7: the holder's quick look while it waits for JOC.
    JocLook,
    /// The result of the action the previous call awaited.
    Done(Outcome),
}

/// Results of awaited actions, one per such action.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// [`super::Action::WaitForElector`]: the status changed, or the wait
    /// timed out.
    ElectorWaited { timed_out: bool },
    /// [`super::Action::ListPodsNow`]: the pods as the API server has them
    /// now (a success proves it reachable), or why not.
    PodsNow(Result<Vec<PodFacts>, String>),
    /// [`super::Action::MarkFailsafe`].
    FailsafeMarked(bool),
    /// [`super::Action::ReadFailsafeMarks`]: each pod and whether it carries
    /// the failsafe mark (unreadable counts as marked).
    FailsafeMarks(Vec<(String, bool)>),
    /// [`super::Action::Label`] with `report`.
    Labeled(bool),
    /// [`super::Action::ReadJoc`].
    Joc(Result<JocView, JocReadError>),
    /// [`super::Action::SetReady`] with `report`.
    ReadySet(Result<(), String>),
    /// [`super::Action::RequestJocSwitch`] with `report`: whether the
    /// request was written (false: JOC moved meanwhile).
    JocSwitch(Result<bool, String>),
    /// [`super::Action::ClearSwitchover`]: whether the request was ours to
    /// handle (still the same value, now removed).
    SwitchoverTaken(Result<bool, String>),
    /// [`super::Action::ReadMembers`].
    Members(Result<Vec<MemberFacts>, String>),
    /// [`super::Action::LookAtLease`]: read, or why not.
    LeaseLooked(Result<(), String>),
    /// [`super::Action::HandOver`].
    HandOver(Result<HandOverOutcome, String>),
    /// [`super::Action::WaitForLabel`]: labeled, or why not.
    TargetLabeled(Result<(), String>),
    /// [`super::Action::WaitForLabel`]: before the target was seen labeled,
    /// the lease came back to this member (the target handed it on).
    LeaseCameBack,
    /// [`super::Action::FenceJoc`]: what was stopped, or why it could not be.
    JocFenced(Result<FenceDone, String>),
    /// [`super::Action::ReadOwnPod`]: this pod from the API server
    /// (`None`: gone), or why it could not be read.
    OwnPod(Result<Option<OwnPodFacts>, String>),
}

/// A fence carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceDone {
    /// The JVM pids SIGKILLed and confirmed gone; empty: no JVM was running.
    pub pids: Vec<i32>,
    /// Whether the JVM's container's process group was SIGKILLed too (the
    /// container ends and the kubelet starts it anew).
    pub container_ended: bool,
    /// Whether the container's processes were left running on purpose
    /// (`end_container: false`): they are to be ended later.
    pub container_left: bool,
    /// JOC's clean-shutdown writes for the fenced member, or why not.
    pub release: Result<crate::js7::FencedRelease, String>,
}

/// Why JOC's tables could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JocReadError {
    /// The tables do not exist yet (JOC never started on this database).
    pub not_installed: bool,
    pub message: String,
}
