//! js7, the lease holder's part: label once JOC confirms, ask JOC to
//! switch, follow JOC, release a gone active JOC's row, take away stale
//! switch requests.

use joc_ha_crds::names::reason;

use super::{fence_why, note};
use crate::decide::{Action, Facts, Flow, Level, Metric, Pending, Report, State, Step};
use crate::js7::{
    HolderStep, JocView, holder_step, hostname_of, stale_switch_request, unlicensed_holder_step,
    waiting_holder_step,
};
use crate::lease::HandOverOutcome;

/// The holder's step about JOC.
pub(in crate::decide) fn holder(
    s: &mut State,
    f: &Facts,
    view: &JocView,
    out: &mut Vec<Action>,
) -> Flow {
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
    // A fenced member is never followed nor handed JOC's row: the holder
    // asks JOC to switch back instead (`decide/fenced.rs`).
    let fenced = |pod: &str| f.cluster.as_ref().is_some_and(|c| c.is_fenced(pod));
    let pod_of = |id: &str| {
        let pod = hostname_of(id);
        (pod != me_pod && members.contains(&pod) && !fenced(pod)).then(|| pod.to_owned())
    };
    let (licensed, polling_s) = s.settings.joc.as_ref().map_or((true, 1), |j| {
        (j.licensed, j.polling_interval.as_secs() as i64)
    });
    let step = if view.waits_for_controller(&me_id) {
        waiting_holder_step(view, &me_id, pod_of)
    } else if licensed {
        holder_step(view, &me_id, previous.as_deref(), polling_s, pod_of)
    } else {
        unlicensed_holder_step(view, &me_id, pod_of)
    };
    // Kubernetes says the active JOC's JVM is gone: release its row now,
    // so JOC acts at its next poll, not after its heartbeat timeout. To the
    // holder's own JOC when it can take over (a live instance, licensed, not
    // blocked waiting for a Controller): then no election among JOC's
    // standbys, which any of them may win (the row has no version), and no
    // hand-over of the lease after it.
    if let Some(gone) = s.joc.as_mut().and_then(|j| j.gone_active.take())
        && let Some(started_at) = gone.started_at
    {
        let successor = (licensed
            && gone.member_id != me_id
            && view.is_ready_member(&me_id)
            && !view.waits_for_controller(&me_id))
        .then(|| me_id.clone());
        out.push(Action::Log(
            Level::Info,
            format!(
                "the joc container of {} (JOC's active member) ran anew or stopped: its JVM is gone; {}",
                gone.pod,
                if successor.is_some() {
                    "handing JOC's cluster row to this member's JOC, which takes over at its next poll"
                } else {
                    "releasing JOC's cluster row so that JOC elects at its next poll"
                }
            ),
        ));
        out.push(Action::ReleaseGoneJoc {
            member_id: gone.member_id,
            started_at,
            successor,
        });
    }
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
            // Its own JOC hangs: fenced at the moment the lease is handed
            // on, as a member without the lease (docs/joc-facts.md fact 20).
            let handing_on = State {
                active_term: None,
                ..s.clone()
            };
            if let Some(why) = fence_why(&handing_on, Some(view), None) {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "fencing this member's JOC before the lease goes to {pod}: {}",
                        why.note
                    ),
                ));
                return s.wait(
                    Pending::FenceThenFollow {
                        label: why.label,
                        pod,
                        note,
                        reason: reason::LEASE_FOLLOWED_JOC,
                    },
                    Action::FenceJoc {
                        switch_to: None,
                        end_container: why.ends_container(),
                        why: why.note,
                    },
                    out,
                );
            }
            s.wait(
                Pending::FollowJoc {
                    pod: pod.clone(),
                    note,
                    reason: reason::LEASE_FOLLOWED_JOC,
                },
                Action::HandOver { target: pod },
                out,
            )
        }
        HolderStep::HandOn {
            pod,
            member_id,
            age_s,
        } => {
            let note = format!(
                "JOC's cluster heartbeat of {me_pod}, JOC's active member, is {age_s} s old (its JOC is hung or stalled): {me_pod} asks JOC to switch to {pod} and hands the lease over to it, so that once the heartbeat is exceeded only {pod}'s JOC takes over and the others wait for it"
            );
            out.push(Action::Log(Level::Warn, note.clone()));
            out.push(Action::Publish(Report::Standby));
            // Written while this member still holds the lease, the one
            // writer of JOC's switch requests.
            out.push(Action::RequestJocSwitch {
                from: me_id,
                to: member_id.clone(),
                pod: pod.clone(),
                report: false,
            });
            // Fenced before the lease moves: once it has moved, agreement
            // can be reached and the JOC thawed before this sidecar's next
            // look, and a thawed JOC runs its services until its next poll
            // (docs/joc-facts.md fact 20). A JOC this silent loses JOC's
            // active role at the timeout anyway.
            let why = format!(
                "its JOC's cluster heartbeat is {age_s} s old (hung or stalled) while JOC's active member, and the lease goes to {pod}: a thawed JOC runs its services until its next poll (docs/joc-facts.md fact 20)"
            );
            if s.settings.joc.as_ref().is_some_and(|j| j.fence) {
                return s.wait(
                    Pending::FenceThenFollow {
                        label: "hung",
                        pod,
                        note,
                        reason: reason::HANDED_ON_FROM_SILENT_JOC,
                    },
                    Action::FenceJoc {
                        switch_to: Some(member_id),
                        why,
                        end_container: true,
                    },
                    out,
                );
            }
            s.wait(
                Pending::FollowJoc {
                    pod: pod.clone(),
                    note,
                    reason: reason::HANDED_ON_FROM_SILENT_JOC,
                },
                Action::HandOver { target: pod },
                out,
            )
        }
    }
}

pub(in crate::decide) fn switch_requested(
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

pub(in crate::decide) fn followed(
    s: &mut State,
    pod: &str,
    note: String,
    event_reason: &'static str,
    result: Result<HandOverOutcome, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match result {
        Ok(HandOverOutcome::HandedOver { .. }) => {
            out.push(Action::Event {
                warning: false,
                reason: event_reason,
                note,
            });
            s.next([
                Step::FollowLease,
                Step::DemoteIfActive("handed the lease on to the member JOC runs or will run"),
            ]);
        }
        Ok(other) => out.push(Action::Log(
            Level::Warn,
            format!("cannot hand the lease to {pod}: {other:?}"),
        )),
        Err(error) => out.push(Action::Log(
            Level::Warn,
            format!("cannot hand the lease to {pod}: {error}"),
        )),
    }
    Flow::Continue
}

/// JOC no longer runs us: users must not be sent here.
pub(in crate::decide) fn post_check(
    s: &mut State,
    was_confirmed: bool,
    out: &mut Vec<Action>,
) -> Flow {
    if was_confirmed && !s.joc_confirmed() && s.active_term.is_some() {
        out.push(Action::Label {
            pod: s.settings.me.clone(),
            label: crate::decide::Label::Standby,
            term: None,
            report: false,
            context: "cannot remove this pod's active label",
        });
        out.push(Action::Metric(Metric::Role(0)));
    }
    Flow::Continue
}
