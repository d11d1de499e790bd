//! js7 mode: keep this member's lease readiness equal to its JOC instance's
//! freshness; as holder, label once JOC confirms, ask JOC to switch, or
//! follow JOC (the pure choice is [`crate::js7::holder_step`]).

use joc_ha_crds::names::reason;

use super::{Action, Facts, Flow, JocReadError, Level, Metric, Pending, Report, State, Step};
use crate::js7::{
    HolderStep, JocRun, JocView, holder_step, hostname_of, own_health, stale_switch_request,
    unlicensed_holder_step,
};
use crate::lease::HandOverOutcome;

/// Logs `note` once (until it changes).
fn note(s: &mut State, level: Level, note: String, out: &mut Vec<Action>) {
    if let Some(joc) = &mut s.joc
        && joc.last_note.as_ref() != Some(&note)
    {
        out.push(Action::Log(level, note.clone()));
        joc.last_note = Some(note);
    }
}

pub(super) fn agree(s: &mut State, out: &mut Vec<Action>) -> Flow {
    if s.joc.is_none() {
        return Flow::Continue;
    }
    s.wait(Pending::JocRead, Action::ReadJoc, out)
}

/// JOC's tables as read: readiness first, then the holder's step.
pub(super) fn read(
    s: &mut State,
    f: &Facts,
    view: Result<JocView, JocReadError>,
    out: &mut Vec<Action>,
) -> Flow {
    let Some(settings) = s.settings.joc.clone() else {
        return Flow::Continue;
    };
    let view = match view {
        Ok(view) => view,
        Err(error) => {
            note(s, Level::Warn, error.message, out);
            if error.not_installed {
                out.push(Action::JocHealth { fresh: false });
                if let Some(joc) = &mut s.joc
                    && joc.ready != Some(false)
                {
                    joc.ready = Some(false);
                    out.push(Action::SetReady {
                        ready: false,
                        report: false,
                    });
                }
            }
            return Flow::Continue;
        }
    };
    // Only a heartbeat of the JOC process now running counts (fact 22).
    let run = f
        .own
        .as_ref()
        .map_or(JocRun::Unknown, |o| o.joc_run.clone());
    let Some(joc) = &mut s.joc else {
        return Flow::Continue;
    };
    let (fresh, baseline) = own_health(joc.baseline.as_ref(), &run, &view, &settings.member_id);
    joc.baseline = baseline;
    out.push(Action::JocHealth { fresh });
    let ready = fresh && s.may_hold();
    if s.joc.as_ref().is_some_and(|j| j.ready != Some(ready)) {
        return s.wait(
            Pending::JocReady {
                ready,
                view: Box::new(view),
            },
            Action::SetReady {
                ready,
                report: true,
            },
            out,
        );
    }
    s.next([Step::JocHolder(Box::new(view))]);
    Flow::Continue
}

pub(super) fn ready_set(
    s: &mut State,
    ready: bool,
    view: JocView,
    result: Result<(), String>,
    out: &mut Vec<Action>,
) -> Flow {
    let member_id = s
        .settings
        .joc
        .as_ref()
        .map(|j| j.member_id.clone())
        .unwrap_or_default();
    match result {
        Ok(()) => {
            if let Some(joc) = &mut s.joc {
                joc.ready = Some(ready);
            }
            out.push(if ready {
                Action::Log(
                    Level::Info,
                    format!("this member's JOC instance {member_id} heartbeats: ready for the lease"),
                )
            } else {
                Action::Log(
                    Level::Warn,
                    format!("this member's JOC instance {member_id} has no fresh heartbeat in JOC_INSTANCES written by the JOC process now running (or is an API server): not ready for the lease"),
                )
            });
        }
        Err(error) => out.push(Action::Log(
            Level::Warn,
            format!("cannot set this member's readiness in the lease database: {error}"),
        )),
    }
    s.next([Step::JocHolder(Box::new(view))]);
    Flow::Continue
}

/// The holder's step about JOC.
pub(super) fn holder(s: &mut State, f: &Facts, view: &JocView, out: &mut Vec<Action>) -> Flow {
    let Some(me_id) = s.settings.joc.as_ref().map(|j| j.member_id.clone()) else {
        return Flow::Continue;
    };
    let active_term = s.active_term;
    let Some(joc) = &mut s.joc else {
        return Flow::Continue;
    };
    let previous = std::mem::replace(
        &mut joc.previous_active,
        view.active_member().map(str::to_owned),
    );
    let previous_term = std::mem::replace(&mut joc.previous_term, active_term);
    let Some(term) = active_term else {
        return Flow::Continue;
    };
    // Only a move JOC made while this member held this term is one it made
    // by itself: the move that came before it (the fail-over or switch-over
    // that gave us the lease) must not send the lease back.
    let previous = previous.filter(|_| previous_term == Some(term));
    let me_pod = s.settings.me.clone();
    let members: Vec<&str> = f
        .pods
        .iter()
        .filter(|p| p.is_member())
        .map(|p| p.name.as_str())
        .collect();
    let pod_of = |id: &str| {
        let pod = hostname_of(id);
        (pod != me_pod && members.contains(&pod)).then(|| pod.to_owned())
    };
    let (licensed, polling_s) = s.settings.joc.as_ref().map_or((true, 1), |j| {
        (j.licensed, j.polling_interval.as_secs() as i64)
    });
    let step = if licensed {
        holder_step(view, &me_id, previous.as_deref(), pod_of)
    } else {
        unlicensed_holder_step(view, &me_id, pod_of)
    };
    // The holder is the one writer of JOC's switch request: it also takes
    // away requests JOC would never execute or clear.
    if let Some(stale) = stale_switch_request(view, &me_id, polling_s) {
        out.push(Action::ClearJocSwitch {
            switch_member_id: stale.switch_member_id,
            why: stale.why,
        });
    }
    let Some(joc) = &mut s.joc else {
        return Flow::Continue;
    };
    let was_confirmed = joc.confirmed;
    joc.confirmed = step == HolderStep::Confirmed;
    s.next([Step::JocPostCheck { was_confirmed }]);
    match step {
        HolderStep::Confirmed => {
            if let Some(joc) = &mut s.joc {
                joc.last_note = None;
            }
            if !was_confirmed {
                out.push(Action::Log(
                    Level::Info,
                    format!("JOC confirms this member active (term {term})"),
                ));
                s.next([Step::LabelActive {
                    term,
                    new_term: false,
                }]);
            }
            Flow::Continue
        }
        HolderStep::Wait(why) => {
            note(
                s,
                Level::Info,
                format!("holding the lease (term {term}): {why}"),
                out,
            );
            Flow::Continue
        }
        HolderStep::RequestSwitch => {
            let Some(active) = view.active_member().map(str::to_owned) else {
                return Flow::Continue;
            };
            s.wait(
                Pending::JocSwitch {
                    term,
                    active: active.clone(),
                },
                Action::RequestJocSwitch {
                    from: active,
                    to: me_id,
                    pod: me_pod,
                    report: true,
                },
                out,
            )
        }
        HolderStep::FollowJoc(pod) => {
            let note =
                format!("JOC made {pod} active by itself; {me_pod} hands the lease over to it");
            out.push(Action::Log(Level::Info, note.clone()));
            // The cockpit hears "standby" before the lease moves.
            out.push(Action::Publish(Report::Standby));
            s.wait(
                Pending::FollowJoc {
                    pod: pod.clone(),
                    note,
                },
                Action::HandOver { target: pod },
                out,
            )
        }
    }
}

pub(super) fn switch_requested(
    s: &mut State,
    term: i64,
    active: &str,
    result: Result<bool, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match result {
        Ok(true) => {
            let me = &s.settings.me;
            let note = format!(
                "{me} holds the lease (term {term}); asked JOC to switch its active member from {} to {me}",
                hostname_of(active)
            );
            out.push(Action::Log(Level::Info, note.clone()));
            if let Some(joc) = &mut s.joc {
                joc.last_note = Some(note.clone());
            }
            out.push(Action::Event {
                warning: false,
                reason: reason::JOC_SWITCH_REQUESTED,
                note,
            });
        }
        Ok(false) => {} // JOC moved meanwhile: judged at the next look.
        Err(error) => out.push(Action::Log(Level::Warn, error)),
    }
    Flow::Continue
}

pub(super) fn followed(
    s: &mut State,
    pod: &str,
    note: String,
    result: Result<HandOverOutcome, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match result {
        Ok(HandOverOutcome::HandedOver { .. }) => {
            out.push(Action::Event {
                warning: false,
                reason: reason::LEASE_FOLLOWED_JOC,
                note,
            });
            s.next([
                Step::FollowLease,
                Step::DemoteIfActive("handed the lease to the member JOC made active"),
            ]);
        }
        Ok(other) => out.push(Action::Log(
            Level::Warn,
            format!("cannot hand the lease to JOC's active member {pod}: {other:?}"),
        )),
        Err(error) => out.push(Action::Log(
            Level::Warn,
            format!("cannot hand the lease to JOC's active member {pod}: {error}"),
        )),
    }
    Flow::Continue
}

/// JOC no longer runs us: users must not be sent here.
pub(super) fn post_check(s: &mut State, was_confirmed: bool, out: &mut Vec<Action>) -> Flow {
    if was_confirmed && !s.joc_confirmed() && s.active_term.is_some() {
        out.push(Action::Label {
            pod: s.settings.me.clone(),
            label: super::Label::Standby,
            term: None,
            report: false,
            context: "cannot remove this pod's active label",
        });
        out.push(Action::Metric(Metric::Role(0)));
    }
    Flow::Continue
}
