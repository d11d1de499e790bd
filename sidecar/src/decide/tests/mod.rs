//! Table-driven tests of [`super::decide`]: each drives a flow with scripted
//! outcomes and compares the effects, in order. Tests named after a bug
//! describe what the old logic did.

mod fence;
mod fenced;
mod fresh_install;
mod gone;
mod joc;
mod joc_restarts;
mod lease;
mod pod;
mod switchover;

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::JocSettings;
use crate::js7::{ClusterRow, ContainerRun, InstanceRow, InstanceStamp, member_id};
use crate::lease::{HandOverOutcome, Role};

pub const ME: &str = "joc-0";
pub const DATA_DIR: &str = "/var/sos-berlin.com/js7/joc";
pub const VALIDITY: Duration = Duration::from_secs(4);

pub fn settings(js7: bool) -> Settings {
    Settings {
        me: ME.to_owned(),
        cluster: "joc".to_owned(),
        lease_validity: VALIDITY,
        lease_ttl: Duration::from_secs(5),
        renew_interval: Duration::from_secs(1),
        joc: js7.then(|| JocSettings {
            member_id: member_id(ME, DATA_DIR),
            data_dir: DATA_DIR.to_owned(),
            polling_interval: Duration::from_secs(1),
            heart_beat_exceeded_interval: Duration::from_secs(5),
            licensed: true,
            jetty_base: "/var/sos-berlin.com/js7/joc".to_owned(),
            fence: true,
            controllers_retry: Duration::from_secs(5),
        }),
    }
}

/// A state holding `term` (labeled, and in js7 mode confirmed by JOC).
pub fn holding(js7: bool, term: i64) -> State {
    let mut state = State::new(settings(js7));
    state.active_term = Some(term);
    if let Some(joc) = &mut state.joc {
        joc.confirmed = true;
        joc.ready = Some(true);
        joc.baseline = Some(proven());
        joc.previous_term = Some(term);
        joc.previous_active = Some(id(ME));
    }
    state
}

pub fn standby(js7: bool) -> State {
    let mut state = State::new(settings(js7));
    if let Some(joc) = &mut state.joc {
        joc.ready = Some(true);
        joc.baseline = Some(proven());
    }
    state
}

/// A sidecar that has seen its JOC (run `0@t0` of [`own_pod`]) heartbeat.
pub fn proven() -> crate::js7::HealthBaseline {
    crate::js7::HealthBaseline {
        run: Some("0@t0".to_owned()),
        stamp: None,
        proven: true,
    }
}

/// JOC's member id of a pod.
pub fn id(pod: &str) -> String {
    member_id(pod, DATA_DIR)
}

pub fn member(name: &str, role: Option<&str>) -> PodFacts {
    PodFacts {
        name: name.to_owned(),
        component: Some(joc_ha_crds::names::COMPONENT_MEMBER.to_owned()),
        role: role.map(str::to_owned),
        ready: true,
        terminating: false,
        failsafe: false,
        joc_run: ContainerRun::Running("0@t0".to_owned()),
        sidecar_run: ContainerRun::Running("0@t0".to_owned()),
    }
}

fn role_term(role: Role) -> i64 {
    match role {
        Role::Active { term, .. } => term,
        Role::Standby => 0,
    }
}

pub fn active(term: i64, now: Instant) -> Role {
    Role::Active {
        term,
        until: now + VALIDITY,
    }
}

/// Facts at `now`: this pod and two standbys, elector connected.
pub fn facts(now: Instant, role: Role, own: Option<&str>, other_active: bool) -> Facts {
    Facts {
        now,
        wall_now: jiff::Timestamp::UNIX_EPOCH,
        role,
        elector: ElectorFacts {
            connected: true,
            failing: false,
            holder_is_me: role.is_active(),
            // A standby beside an active joc-1 has read joc-1's lease.
            live_holder: if role.is_active() {
                Some((ME.to_owned(), role_term(role)))
            } else {
                other_active.then(|| ("joc-1".to_owned(), 4))
            },
        },
        pods: vec![
            member(ME, own),
            member(
                "joc-1",
                Some(if other_active { "active" } else { "standby" }),
            ),
            member("joc-2", Some("standby")),
        ],
        cluster: Some(ClusterFacts::default()),
        own: Some(own_pod()),
    }
}

/// This pod as the API server has it: a member of cluster `joc`, owned by
/// its StatefulSet, not being deleted.
pub fn own_pod() -> OwnPodFacts {
    OwnPodFacts {
        terminating: false,
        cluster: Some("joc".to_owned()),
        component: Some(joc_ha_crds::names::COMPONENT_MEMBER.to_owned()),
        controlled: true,
        joc_run: ContainerRun::Running("0@t0".to_owned()),
    }
}

/// A new `HEART_BEAT` text at every call: JOC heartbeats between looks.
fn next_beat() -> Option<String> {
    static BEATS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BEATS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(format!("beat {n}"))
}

/// JOC's tables with `active` as JOC's active member; every member fresh.
pub fn view(active: Option<&str>, switch_to: Option<&str>) -> JocView {
    JocView::new(
        active.map(|pod| ClusterRow {
            member_id: id(pod),
            heart_beat_age_s: 0,
            switch_member_id: switch_to.map(id),
            switch_heart_beat_age_s: switch_to.map(|_| 0),
        }),
        ["joc-0", "joc-1", "joc-2"]
            .into_iter()
            .map(|pod| InstanceRow {
                member_id: id(pod),
                heart_beat_age_s: 0,
                api_server: false,
                stamp: InstanceStamp {
                    started_at: Some("t0".to_owned()),
                    heart_beat: next_beat(),
                },
                security_level: Some("LOW".to_owned()),
            })
            .collect(),
        Duration::from_secs(5),
    )
}

/// Scripted answers to awaited actions; the defaults are the happy path.
pub struct Answers {
    pub labeled: bool,
    /// The API server's pods; `None`: the same as the cache.
    pub pods_now: Option<Result<Vec<PodFacts>, String>>,
    pub marked: bool,
    pub failsafe_pods: Vec<String>,
    pub elector_timed_out: bool,
    pub joc: Result<JocView, JocReadError>,
    pub ready_set: Result<(), String>,
    pub joc_switch: Result<bool, String>,
    pub taken: Result<bool, String>,
    pub members: Result<Vec<MemberFacts>, String>,
    pub hand_over: Option<Result<HandOverOutcome, String>>,
    pub target_labeled: Result<(), String>,
    /// The wait for the target's label sees the lease back (term 10).
    pub lease_back: bool,
    pub fence: Result<FenceDone, String>,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            labeled: true,
            pods_now: None,
            marked: true,
            failsafe_pods: vec![],
            elector_timed_out: true,
            joc: Ok(view(Some(ME), None)),
            ready_set: Ok(()),
            joc_switch: Ok(true),
            taken: Ok(true),
            members: Ok(["joc-0", "joc-1", "joc-2"]
                .into_iter()
                .map(|name| MemberFacts {
                    name: name.to_owned(),
                    ready: true,
                    fresh: true,
                })
                .collect()),
            hand_over: None,
            target_labeled: Ok(()),
            lease_back: false,
            fence: Ok(FenceDone {
                pids: vec![4242],
                container_ended: true,
                container_left: false,
                release: Ok(crate::js7::FencedRelease {
                    cluster_row_deleted: true,
                    heartbeat_reset: true,
                }),
            }),
        }
    }
}

impl Answers {
    /// The outcome of `action`; a hand-over also moves the lease in `facts`.
    fn answer(&self, action: &Action, facts: &mut Facts) -> Outcome {
        match action {
            Action::Label { .. } => Outcome::Labeled(self.labeled),
            Action::MarkFailsafe => Outcome::FailsafeMarked(self.marked),
            Action::ReadFailsafeMarks { pods } => Outcome::FailsafeMarks(
                pods.iter()
                    .map(|p| (p.clone(), self.failsafe_pods.contains(p)))
                    .collect(),
            ),
            Action::ListPodsNow => Outcome::PodsNow(
                self.pods_now
                    .clone()
                    .unwrap_or_else(|| Ok(facts.pods.clone()))
                    .map(|pods| {
                        pods.into_iter()
                            .map(|p| PodFacts {
                                failsafe: self.failsafe_pods.contains(&p.name),
                                ..p
                            })
                            .collect()
                    }),
            ),
            Action::WaitForElector { .. } => Outcome::ElectorWaited {
                timed_out: self.elector_timed_out,
            },
            Action::ReadJoc => Outcome::Joc(self.joc.clone()),
            Action::SetReady { .. } => Outcome::ReadySet(self.ready_set.clone()),
            Action::RequestJocSwitch { .. } => Outcome::JocSwitch(self.joc_switch.clone()),
            Action::ClearSwitchover { .. } => Outcome::SwitchoverTaken(self.taken.clone()),
            Action::ReadMembers => Outcome::Members(self.members.clone()),
            Action::HandOver { target } => {
                let outcome = self
                    .hand_over
                    .clone()
                    .unwrap_or(Ok(HandOverOutcome::HandedOver {
                        to: target.clone(),
                        term: 9,
                    }));
                if matches!(outcome, Ok(HandOverOutcome::HandedOver { .. })) {
                    facts.role = Role::Standby;
                    facts.elector.holder_is_me = false;
                }
                Outcome::HandOver(outcome)
            }
            Action::WaitForLabel { .. } if self.lease_back => {
                facts.role = active(10, facts.now);
                facts.elector.holder_is_me = true;
                Outcome::LeaseCameBack
            }
            Action::WaitForLabel { .. } => Outcome::TargetLabeled(self.target_labeled.clone()),
            Action::ReadOwnPod => Outcome::OwnPod(Ok(facts.own.clone())),
            Action::LookAtLease { .. } => Outcome::LeaseLooked(Ok(())),
            // As the runner's fence does: the container ends, or is left.
            Action::FenceJoc { end_container, .. } => {
                Outcome::JocFenced(self.fence.clone().map(|done| FenceDone {
                    container_ended: done.container_ended && *end_container,
                    container_left: done.container_ended && !*end_container,
                    ..done
                }))
            }
            other => panic!("{other:?} is not awaited"),
        }
    }
}

/// Runs `event` and every outcome it leads to; returns the final state and
/// all actions in order.
pub fn drive(
    state: &State,
    facts: &mut Facts,
    event: Event,
    answers: &Answers,
) -> (State, Vec<Action>) {
    let mut state = state.clone();
    let mut all = Vec::new();
    let mut event = Some(event);
    while let Some(next) = event.take() {
        let (after, actions) = decide(&state, facts, next);
        state = after;
        for action in &actions {
            if action.awaits() {
                assert!(
                    std::ptr::eq(action, actions.last().expect("non-empty")),
                    "an awaited action must end its batch: {actions:?}"
                );
                event = Some(Event::Done(answers.answer(action, facts)));
            }
        }
        all.extend(actions);
    }
    assert!(!state.is_waiting(), "the flow ran to its end");
    (state, all)
}

/// The actions in short form, without logs and metrics.
pub fn brief(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| {
            Some(match a {
                Action::Publish(Report::Standby) => "publish:standby".to_owned(),
                Action::Publish(Report::Active { term, .. }) => format!("publish:active:{term}"),
                Action::Label {
                    pod, label, term, ..
                } => match term {
                    Some(t) => format!("label:{pod}:{}:{t}", label.as_str()),
                    None => format!("label:{pod}:{}", label.as_str()),
                },
                Action::MarkFailsafe => "mark-failsafe".to_owned(),
                Action::ReadFailsafeMarks { pods } => format!("read-marks:{}", pods.join(",")),
                Action::WaitOutFailsafe { pod, period } => {
                    format!("wait-failsafe:{pod}:{}s", period.as_secs())
                }
                Action::ListPodsNow => "list-pods".to_owned(),
                Action::WaitForElector { .. } => "wait-elector".to_owned(),
                Action::ReadJoc => "read-joc".to_owned(),
                Action::FenceJoc {
                    end_container: true,
                    switch_to: Some(to),
                    ..
                } => format!("fence,then-joc-switch:{}", crate::js7::hostname_of(to)),
                Action::FenceJoc {
                    end_container: true,
                    ..
                } => "fence".to_owned(),
                Action::FenceJoc { .. } => "fence-jvm-only".to_owned(),
                Action::EndJocContainer => "end-joc-container".to_owned(),
                Action::KeepJocHeartbeat => "keep-joc-heartbeat".to_owned(),
                Action::ReleaseGoneJoc {
                    member_id,
                    successor,
                    ..
                } => match successor {
                    Some(to) => format!(
                        "release-gone:{}->{}",
                        crate::js7::hostname_of(member_id),
                        crate::js7::hostname_of(to)
                    ),
                    None => format!("release-gone:{}", crate::js7::hostname_of(member_id)),
                },
                Action::JocHealth { fresh } => format!("joc-health:{fresh}"),
                Action::SetReady { ready, .. } => format!("ready:{ready}"),
                Action::RequestJocSwitch { from, to, .. } => format!(
                    "joc-switch:{}->{}",
                    crate::js7::hostname_of(from),
                    crate::js7::hostname_of(to)
                ),
                Action::ClearSwitchover { value } => format!("clear:{value}"),
                Action::RestoreSwitchover { value } => format!("restore:{value}"),
                Action::ClearJocSwitch {
                    switch_member_id, ..
                } => format!("joc-clear:{}", crate::js7::hostname_of(switch_member_id)),
                Action::ReadMembers => "members".to_owned(),
                Action::ReadOwnPod => "read-pod".to_owned(),
                Action::HandOver { target } => format!("handover:{target}"),
                Action::Release => "release".to_owned(),
                Action::LookAtLease { pod } => format!("look-lease:{pod}"),
                Action::ConfirmHolderGone { member, term } => {
                    format!("holder-gone:{member}:{term}")
                }
                Action::WaitForLabel { target, .. } => format!("wait-label:{target}"),
                Action::WaitForJocToLeave { .. } => "wait-joc-leave".to_owned(),
                Action::RecordSwitchover(status) => format!("record:{:?}", status.result),
                Action::Event { reason, .. } => format!("event:{reason}"),
                Action::Exit => "exit".to_owned(),
                Action::Metric(_) | Action::Log(..) => return None,
            })
        })
        .collect()
}

/// Position of the first action whose brief form is `what`.
pub fn position(actions: &[Action], what: &str) -> usize {
    brief(actions)
        .iter()
        .position(|a| a == what)
        .unwrap_or_else(|| panic!("no {what:?} in {:?}", brief(actions)))
}

#[test]
fn an_outcome_nothing_waits_for_changes_nothing() {
    let now = Instant::now();
    let state = holding(false, 5);
    let (after, actions) = decide(
        &state,
        &facts(now, active(5, now), Some("active"), false),
        Event::Done(Outcome::Labeled(true)),
    );
    assert_eq!(after, state);
    assert!(brief(&actions).is_empty(), "{actions:?}");
}
