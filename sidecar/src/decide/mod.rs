//! The sidecar's behaviour as data: [`decide`] takes the state, a snapshot
//! of facts and an event, and returns the next state and the actions to
//! carry out, in order. It does no I/O and reads no clock (time is a fact);
//! the runner (`crate::runner`) gathers facts and carries out actions.
//!
//! An event starts an *agenda* of steps (a tick: follow the lease, agree
//! with JOC, correct labels, handle a switch-over). A step that needs the
//! result of an effect (a hand-over, a read of the API server) ends the
//! batch with that awaited action and leaves a [`Step::Await`] at the head
//! of the agenda; the runner answers with [`Event::Done`], and `decide`
//! resumes there with fresh facts. So multi-step flows (switch-over,
//! step-down, failsafe, following JOC) are state machines across events.
//!
//! The steps live in `lease.rs` (lease, labels, failsafe), `switchover.rs`
//! (switch-over and step-down) and `joc.rs` (js7 agreement).

mod actions;
mod facts;
pub mod fence;
mod fenced;
mod gone;
mod joc;
mod lease;
mod pod;
mod state;
mod switchover;
#[cfg(test)]
mod tests;

pub use actions::{Action, Label, Level, Metric, Report};
pub use facts::{
    ClusterFacts, ElectorFacts, Event, Facts, FenceDone, JocReadError, MemberFacts, Outcome,
    OwnPodFacts, PodFacts, Settings,
};
pub use state::{ActiveSeen, HolderSeen, JocState, State};
pub use switchover::supersedes;

use crate::eligibility::Target;
use crate::js7::JocView;

/// Whether the agenda goes on or waits for an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Suspend,
}

/// One step of an agenda.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Apply the elector's current role.
    FollowLease,
    /// Tell the elector when Kubernetes reports another holder's
    /// processes gone.
    WatchHolder,
    /// Keep this pod's label true to the lease and others' active labels
    /// off (after following the lease).
    CorrectLabels,
    CorrectLabelsNow,
    /// Handle a pending switch-over request (after following the lease).
    HandleSwitchover,
    HandleSwitchoverNow,
    /// js7: look at JOC's tables and agree.
    AgreeWithJoc,
    /// js7: fence first if this sidecar did not run for longer than the
    /// lease's TTL and holds no valid lease (frozen with its JOC).
    FenceIfResumed,
    /// Hand the lease over and never take it again.
    LeaveLease(&'static str),
    /// Hand the lease over (if held), without stepping down for good.
    HandOff(String),
    /// Look at this pod: step down if it is being deleted; give up the
    /// lease if it left the active Service's selector.
    OwnPod,
    /// Give up the lease if the user fenced this member; take part again
    /// once unfenced.
    Fenced,
    /// `GET /prestop`: read this pod; step down only if it is being deleted.
    Prestop,
    /// Lost or gave up the lease.
    Demote(String),
    /// Demote if still holding a term.
    DemoteIfActive(&'static str),
    /// Gained `term`: strip others' active labels, then label.
    Promote {
        term: i64,
    },
    /// Label this pod active for `term`.
    LabelActive {
        term: i64,
        new_term: bool,
    },
    /// Tell the cockpit "active" (after promoting).
    Publish(Report),
    /// Whether the database is down (not the lease lost), before demoting.
    JudgeDatabase {
        term: i64,
        deadline: tokio::time::Instant,
    },
    /// Database down: stay active while the API shows no other active pod.
    Failsafe {
        term: i64,
    },
    /// Wait for the target of a switch-over to be labeled.
    AwaitTarget(Switchover),
    /// js7: after the holder's step, the label goes if JOC stopped running
    /// this member.
    JocPostCheck {
        was_confirmed: bool,
    },
    JocHolder(Box<JocView>),
    Exit,
    /// An awaited action is outstanding.
    Await(Pending),
}

/// A switch-over request being handled.
#[derive(Debug, Clone, PartialEq)]
struct Switchover {
    value: String,
    requested: jiff::Timestamp,
    target: Option<String>,
    /// The term the target received by the hand-over.
    handed_term: Option<i64>,
}

/// What a parked step does with its outcome.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Elector {
        term: i64,
        deadline: tokio::time::Instant,
    },
    FailsafePods {
        term: i64,
        checked_at: tokio::time::Instant,
    },
    FailsafeMark {
        term: i64,
        checked_at: tokio::time::Instant,
    },
    PromotePods {
        term: i64,
    },
    PromoteMarks {
        term: i64,
    },
    LabelActive {
        term: i64,
        new_term: bool,
    },
    JocRead,
    /// A fence; then the readiness step with `view`, or a JOC read if none.
    Fence {
        label: &'static str,
        view: Option<Box<JocView>>,
    },
    /// A fence (right after this sidecar resumed from a freeze, or while
    /// JOC's tables are unreadable); then the rest of the agenda, no read.
    FenceThenGoOn {
        label: &'static str,
    },
    /// A fence at the moment the lease is handed on to JOC's active `pod`.
    FenceThenFollow {
        label: &'static str,
        pod: String,
        note: String,
        reason: &'static str,
    },
    JocReady {
        ready: bool,
        view: Box<JocView>,
    },
    JocSwitch {
        term: i64,
        active: String,
    },
    /// A hand-over to `pod`; its Event has `reason`.
    FollowJoc {
        pod: String,
        note: String,
        reason: &'static str,
    },
    SwitchoverTaken(Switchover),
    SwitchoverMembers(Switchover, Target),
    SwitchoverHandOver(Switchover),
    SwitchoverLabeled(Switchover),
    /// A read of the lease, then Kubernetes' word on the holder again.
    LeaseLooked,
    StepDownMembers(String),
    StepDownHandOver(String),
    PrestopPod,
}

/// The sidecar's decision: from `state`, `facts` and `event`, the next
/// state and the actions to carry out in order.
pub fn decide(state: &State, facts: &Facts, event: Event) -> (State, Vec<Action>) {
    let mut s = state.clone();
    let mut out = Vec::new();
    let mut outcome = None;
    match event {
        Event::Done(done) => match s.agenda.front() {
            Some(Step::Await(_)) => outcome = Some(done),
            _ => {
                out.push(Action::Log(
                    Level::Warn,
                    format!("an outcome arrived that nothing waits for: {done:?}"),
                ));
                return (s, out);
            }
        },
        input => {
            // An input never interrupts a flow: the runner answers every
            // awaited action first. If one was dropped, start afresh.
            s.agenda.clear();
            s.next(agenda(&input));
            if input == Event::ElectorStopped {
                out.push(Action::Log(
                    Level::Warn,
                    "the lease elector stopped; exiting".into(),
                ));
            }
        }
    }
    while let Some(step) = s.agenda.pop_front() {
        let flow = match step {
            Step::Await(pending) => match outcome.take() {
                Some(done) => resume(&mut s, facts, pending, done, &mut out),
                None => {
                    s.agenda.push_front(Step::Await(pending));
                    Flow::Suspend
                }
            },
            step => run(&mut s, facts, step, &mut out),
        };
        if flow == Flow::Suspend {
            break;
        }
    }
    (s, out)
}

/// The steps an input starts.
fn agenda(input: &Event) -> Vec<Step> {
    match input {
        Event::Tick => vec![
            Step::FenceIfResumed,
            Step::OwnPod,
            Step::Fenced,
            Step::FollowLease,
            Step::WatchHolder,
            Step::AgreeWithJoc,
            Step::CorrectLabels,
            Step::HandleSwitchover,
        ],
        Event::LeaseChanged => vec![
            Step::FenceIfResumed,
            Step::FollowLease,
            Step::WatchHolder,
            Step::AgreeWithJoc,
        ],
        Event::ElectorStopped => {
            vec![Step::Demote("the lease elector stopped".into()), Step::Exit]
        }
        Event::PodsChanged => vec![Step::OwnPod, Step::WatchHolder, Step::CorrectLabels],
        Event::ClusterChanged => vec![Step::Fenced, Step::HandleSwitchover],
        Event::Prestop => vec![Step::Prestop],
        Event::Sigterm => vec![Step::LeaveLease("SIGTERM"), Step::Exit],
        Event::JocLook => vec![Step::AgreeWithJoc],
        Event::Done(_) => vec![],
    }
}

fn run(s: &mut State, f: &Facts, step: Step, out: &mut Vec<Action>) -> Flow {
    match step {
        Step::FollowLease => lease::follow_lease(s, f, out),
        Step::WatchHolder => gone::watch_holder(s, f, out),
        Step::CorrectLabels => {
            // The lease first: a holder resumed after a freeze must see that
            // its role ran out before it defends its label (else it fights
            // the new holder for the Service).
            s.next([Step::FollowLease, Step::CorrectLabelsNow]);
            Flow::Continue
        }
        Step::CorrectLabelsNow => lease::correct_labels(s, f, out),
        Step::HandleSwitchover => {
            // Only a holder whose role is still valid acts.
            if f.cluster
                .as_ref()
                .is_some_and(|c| c.switchover_to.is_some())
            {
                s.next([Step::FollowLease, Step::HandleSwitchoverNow]);
            } else {
                s.next([Step::HandleSwitchoverNow]);
            }
            Flow::Continue
        }
        Step::HandleSwitchoverNow => switchover::handle(s, f, out),
        Step::AgreeWithJoc => joc::agree(s, f, out),
        Step::FenceIfResumed => joc::fence_if_resumed(s, f, out),
        Step::LeaveLease(why) => switchover::step_down(s, f, why, out),
        Step::HandOff(why) => switchover::hand_off(s, why, out),
        Step::OwnPod => pod::check(s, f, out),
        Step::Fenced => fenced::check(s, f, out),
        Step::Prestop => pod::prestop(s, out),
        Step::Demote(why) => {
            lease::demote(s, &why, out);
            Flow::Continue
        }
        Step::DemoteIfActive(why) => {
            if s.active_term.is_some() {
                lease::demote(s, why, out);
            }
            Flow::Continue
        }
        Step::Promote { term } => lease::promote(s, term, out),
        Step::LabelActive { term, new_term } => lease::label_active(s, term, new_term, out),
        Step::Publish(report) => {
            out.push(Action::Publish(report));
            Flow::Continue
        }
        Step::JudgeDatabase { term, deadline } => lease::judge_database(s, f, term, deadline, out),
        Step::Failsafe { term } => s.wait(
            Pending::FailsafePods {
                term,
                checked_at: f.now,
            },
            Action::ListPodsNow,
            out,
        ),
        Step::AwaitTarget(request) => switchover::await_target(s, request, out),
        Step::JocPostCheck { was_confirmed } => joc::post_check(s, was_confirmed, out),
        Step::JocHolder(view) => joc::holder(s, f, &view, out),
        Step::Exit => {
            out.push(Action::Exit);
            Flow::Continue
        }
        Step::Await(_) => Flow::Suspend,
    }
}

fn resume(
    s: &mut State,
    f: &Facts,
    pending: Pending,
    done: Outcome,
    out: &mut Vec<Action>,
) -> Flow {
    match (pending, done) {
        (Pending::Elector { term, deadline }, Outcome::ElectorWaited { timed_out }) => {
            if timed_out {
                lease::demote_for(s, f, out);
                Flow::Continue
            } else {
                lease::judge_database(s, f, term, deadline, out)
            }
        }
        (Pending::FailsafePods { term, checked_at }, Outcome::PodsNow(pods)) => {
            lease::failsafe_checked(s, f, term, checked_at, pods, out)
        }
        (Pending::FailsafeMark { term, checked_at }, Outcome::FailsafeMarked(ok)) => {
            lease::failsafe_marked(s, f, term, checked_at, ok, out)
        }
        (Pending::PromotePods { term }, Outcome::PodsNow(pods)) => {
            lease::promote_with(s, f, term, pods, out)
        }
        (Pending::PromoteMarks { term }, Outcome::FailsafeMarks(marks)) => {
            lease::strip_others(s, term, &marks, out)
        }
        (Pending::LabelActive { term, new_term }, Outcome::Labeled(ok)) => {
            lease::labeled_active(s, term, new_term, ok, out)
        }
        (Pending::JocRead, Outcome::Joc(view)) => joc::read(s, f, view, out),
        (Pending::Fence { label, view }, Outcome::JocFenced(result)) => {
            joc::fenced(s, label, result, out);
            match view {
                Some(view) => joc::readiness(s, f, *view, out),
                None => s.wait(Pending::JocRead, Action::ReadJoc, out),
            }
        }
        (Pending::FenceThenGoOn { label }, Outcome::JocFenced(result)) => {
            joc::fenced(s, label, result, out);
            Flow::Continue
        }
        (
            Pending::FenceThenFollow {
                label,
                pod,
                note,
                reason,
            },
            Outcome::JocFenced(result),
        ) => {
            joc::fenced(s, label, result, out);
            s.wait(
                Pending::FollowJoc {
                    pod: pod.clone(),
                    note,
                    reason,
                },
                Action::HandOver { target: pod },
                out,
            )
        }
        (Pending::JocReady { ready, view }, Outcome::ReadySet(result)) => {
            joc::ready_set(s, ready, *view, result, out)
        }
        (Pending::JocSwitch { term, active }, Outcome::JocSwitch(result)) => {
            joc::switch_requested(s, term, &active, result, out)
        }
        (Pending::FollowJoc { pod, note, reason }, Outcome::HandOver(result)) => {
            joc::followed(s, &pod, note, reason, result, out)
        }
        (Pending::SwitchoverTaken(request), Outcome::SwitchoverTaken(result)) => {
            switchover::taken(s, f, request, result, out)
        }
        (Pending::SwitchoverMembers(request, target), Outcome::Members(members)) => {
            switchover::members_read(s, f, request, &target, members, out)
        }
        (Pending::SwitchoverHandOver(request), Outcome::HandOver(result)) => {
            switchover::handed_over(s, f, request, result, out)
        }
        (Pending::SwitchoverLabeled(request), Outcome::LeaseCameBack) => {
            switchover::lease_came_back(s, f, &request, out)
        }
        (Pending::SwitchoverLabeled(request), Outcome::TargetLabeled(result)) => {
            let target = request.target.clone().unwrap_or_default();
            switchover::finish(s, f, &request, result.map(|()| target), out);
            Flow::Continue
        }
        (Pending::StepDownMembers(why), Outcome::Members(members)) => {
            switchover::step_down_members(s, f, why, members, out)
        }
        (Pending::StepDownHandOver(why), Outcome::HandOver(result)) => {
            let handed = matches!(result, Ok(crate::lease::HandOverOutcome::HandedOver { .. }));
            switchover::step_down_finish(s, &why, handed, out);
            Flow::Continue
        }
        (Pending::PrestopPod, Outcome::OwnPod(own)) => pod::prestop_read(s, own, out),
        (Pending::LeaseLooked, Outcome::LeaseLooked(result)) => {
            if let Err(error) = result {
                out.push(Action::Log(
                    Level::Warn,
                    format!("cannot read the lease for the pod labeled active: {error}"),
                ));
            }
            gone::watch_holder(s, f, out)
        }
        (pending, done) => {
            out.push(Action::Log(
                Level::Warn,
                format!("outcome {done:?} does not answer {pending:?}; dropped"),
            ));
            s.agenda.clear();
            Flow::Suspend
        }
    }
}
