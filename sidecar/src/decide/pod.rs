//! What the sidecar does about its own pod, as the API server has it:
//! step down when the pod is being deleted (only who may delete the pod can
//! cause that: Kubernetes authenticates it), become eligible again if a
//! step-down turns out not to have been a stop, and give up the lease while
//! the pod is not behind the active Service (a label its selector needs was
//! removed, or the pod was orphaned), since holding it then leaves the
//! Service empty.
//!
//! `GET /prestop` (the cockpit container's preStop hook) triggers none of
//! this by itself: anyone who reaches the sidecar's port can call it. It
//! reads the pod from the API server and steps down only if the pod is being
//! deleted (what the pod watch would see a moment later); the runner answers
//! the call once that hand-over is done, so the hook waits for it.

use joc_ha_crds::names::reason;

use super::{Action, Facts, Flow, Level, OwnPodFacts, Pending, State, Step};

/// Why this pod is stepping down when its deletion is seen.
const DELETED: &str = "this pod is being deleted";

pub(super) fn check(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let Some(own) = &f.own else {
        return Flow::Continue;
    };
    if own.terminating {
        if !s.stepped_down {
            s.next([Step::LeaveLease(DELETED)]);
        }
        return Flow::Continue;
    }
    if s.stepped_down
        && s.stepped_down_at
            .is_some_and(|at| f.now >= at + s.step_down_bound())
    {
        s.stepped_down = false;
        s.stepped_down_at = None;
        out.push(Action::Log(
            Level::Warn,
            format!(
                "stepped down {:?} ago, but this pod is neither being deleted nor stopped; taking part in the lease again",
                s.step_down_bound()
            ),
        ));
        become_eligible(s, out);
    }
    // The kubelet reports JOC's container stopped or restarted, here or in
    // the pod of JOC's active member: look at JOC now, not at the next tick,
    // so readiness drops at once (fact 22) and a gone active JOC is
    // released at once.
    let active_run_changed = |j: &super::JocState| {
        j.active_seen
            .as_ref()
            .is_some_and(|seen| f.joc_run_of(&seen.pod).is_some_and(|run| *run != seen.run))
    };
    if s.joc.as_ref().is_some_and(|j| {
        (j.ready == Some(true) && j.baseline.as_ref().is_some_and(|b| !b.is_for(&own.joc_run)))
            || active_run_changed(j)
    }) {
        s.next([Step::AgreeWithJoc]);
    }
    let left = own.unroutable_because(&s.settings.cluster);
    match (&s.left_service, left) {
        (None, Some(why)) => {
            let me = s.settings.me.clone();
            let cluster = s.settings.cluster.clone();
            let note = format!(
                "{me} is not behind the Service {cluster}: {why}; it gives up the lease and does not take it until the label is back"
            );
            out.push(Action::Log(Level::Warn, note.clone()));
            out.push(Action::Event {
                warning: true,
                reason: reason::LEFT_SERVICE,
                note,
            });
            s.left_service = Some(why.clone());
            s.next([Step::HandOff(format!(
                "this pod is not behind the Service {cluster}: {why}"
            ))]);
        }
        (Some(_), None) => {
            s.left_service = None;
            out.push(Action::Log(
                Level::Info,
                format!(
                    "this pod is behind the Service {} again; taking part in the lease",
                    s.settings.cluster
                ),
            ));
            become_eligible(s, out);
        }
        _ => {}
    }
    Flow::Continue
}

/// Competes for the lease again, unless something else still forbids it.
/// In js7 mode the readiness in the lease follows JOC's heartbeat at the
/// next look ([`super::joc`]); in generic mode it is set here.
pub(super) fn become_eligible(s: &mut State, out: &mut Vec<Action>) {
    if s.may_hold() && s.settings.joc.is_none() {
        out.push(Action::SetReady {
            ready: true,
            report: false,
        });
    }
}

/// `GET /prestop`: done at once if already stepped down; else read this
/// pod from the API server.
pub(super) fn prestop(s: &mut State, out: &mut Vec<Action>) -> Flow {
    if s.stepped_down {
        return Flow::Continue;
    }
    s.wait(Pending::PrestopPod, Action::ReadOwnPod, out)
}

pub(super) fn prestop_read(
    s: &mut State,
    own: Result<Option<OwnPodFacts>, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match own {
        Ok(Some(own)) if own.terminating => {
            s.next([Step::LeaveLease(DELETED)]);
        }
        Ok(_) => out.push(Action::Log(
            Level::Warn,
            "GET /prestop while this pod is not being deleted: nothing done (the lease is handed over when the pod is deleted or the sidecar gets SIGTERM)".to_owned(),
        )),
        Err(error) => out.push(Action::Log(
            Level::Warn,
            format!(
                "GET /prestop: cannot read this pod to see whether it is being deleted ({error}); nothing done, SIGTERM still hands over"
            ),
        )),
    }
    Flow::Continue
}
