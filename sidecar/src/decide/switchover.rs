//! Switch-over by annotation, and step-down on SIGTERM or preStop, as state
//! machines: take the request off the JocCluster → read the members →
//! choose the target ([`crate::eligibility`]) → js7: ask JOC → tell the
//! cockpit standby → hand the lease over → follow the lease (demote) → wait
//! for the target's label → record the outcome.

use joc_ha_crds::names::reason;
use joc_ha_crds::v1alpha1::{SwitchoverResult, SwitchoverStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Action, Facts, Flow, Level, MemberFacts, Metric, Pending, Report, State, Step, Switchover,
};
use crate::eligibility::{Candidate, PodState, Target, choose};
use crate::lease::HandOverOutcome;

/// Switch-over candidates: the cluster's pods joined with the lease's
/// member rows.
pub fn candidates(f: &Facts, members: &[MemberFacts]) -> Vec<Candidate> {
    f.pods
        .iter()
        .map(|pod| {
            let row = members.iter().find(|m| m.name == pod.name);
            Candidate {
                name: pod.name.clone(),
                component: pod.component.clone(),
                lease_ready: row.map(|m| m.ready),
                heartbeat_fresh: row.is_some_and(|m| m.fresh),
                pod: Some(PodState {
                    ready: pod.ready,
                    terminating: pod.terminating,
                    fenced: f.cluster.as_ref().is_some_and(|c| c.is_fenced(&pod.name)),
                }),
            }
        })
        .collect()
}

/// The holder handles a pending `joc-ha.dev/switchover-to` request.
pub(super) fn handle(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let Some(value) = f.cluster.as_ref().and_then(|c| c.switchover_to.clone()) else {
        return Flow::Continue;
    };
    // Only the holder acts; with no holder the request waits.
    if s.active_term.is_none() {
        return Flow::Continue;
    }
    // Take the request off the JocCluster first, so that the member that
    // becomes active by it does not see it again; a request changed in the
    // meantime is left for the next turn.
    let request = Switchover {
        value: value.clone(),
        requested: f.wall_now,
        target: None,
        handed_term: None,
    };
    s.wait(
        Pending::SwitchoverTaken(request),
        Action::ClearSwitchover { value },
        out,
    )
}

pub(super) fn taken(
    s: &mut State,
    f: &Facts,
    request: Switchover,
    result: Result<bool, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match result {
        Ok(true) => match Target::parse(&request.value) {
            Err(why) => {
                finish(s, f, &request, Err(why), out);
                Flow::Continue
            }
            Ok(target) => s.wait(
                Pending::SwitchoverMembers(request, target),
                Action::ReadMembers,
                out,
            ),
        },
        Ok(false) => Flow::Continue,
        Err(error) => {
            out.push(Action::Log(
                Level::Warn,
                format!("cannot take the switch-over request; retrying: {error}"),
            ));
            Flow::Continue
        }
    }
}

pub(super) fn members_read(
    s: &mut State,
    f: &Facts,
    mut request: Switchover,
    target: &Target,
    members: Result<Vec<MemberFacts>, String>,
    out: &mut Vec<Action>,
) -> Flow {
    let chosen = members
        .map_err(|e| format!("cannot read member heartbeats: {e}"))
        .and_then(|members| choose(target, &s.settings.me, &candidates(f, &members)));
    let target = match chosen {
        Ok(target) => target,
        Err(why) => {
            finish(s, f, &request, Err(why), out);
            return Flow::Continue;
        }
    };
    ask_joc_to_switch_to(s, &target, out);
    // The cockpit hears "standby" before the lease moves, not after (the
    // next tick says "active" again if the hand-over fails).
    out.push(Action::Publish(Report::Standby));
    request.target = Some(target.clone());
    s.wait(
        Pending::SwitchoverHandOver(request),
        Action::HandOver { target },
        out,
    )
}

pub(super) fn handed_over(
    s: &mut State,
    f: &Facts,
    mut request: Switchover,
    result: Result<HandOverOutcome, String>,
    out: &mut Vec<Action>,
) -> Flow {
    let refused = match result {
        Ok(HandOverOutcome::HandedOver { term, .. }) => {
            request.handed_term = Some(term);
            s.next([
                Step::FollowLease,
                Step::DemoteIfActive("handed the lease over"),
                Step::AwaitTarget(request),
            ]);
            return Flow::Continue;
        }
        Ok(HandOverOutcome::NotHolder) => {
            // The lease lapsed meanwhile (a database restart ends every
            // session): not the request's fault. It goes back to the
            // JocCluster for the next holder, which may be this member again.
            out.push(Action::Log(
                Level::Info,
                format!(
                    "switch-over to {:?}: this member lost the lease while handling it; the request is put back for the next holder",
                    request.value
                ),
            ));
            out.push(Action::RestoreSwitchover {
                value: request.value.clone(),
            });
            return Flow::Continue;
        }
        Ok(HandOverOutcome::NoEligibleTarget { reason }) => reason,
        Err(e) => format!("the lease database refused the hand-over: {e}"),
    };
    finish(s, f, &request, Err(refused), out);
    Flow::Continue
}

/// Waits (bounded) until the target carries the active label.
pub(super) fn await_target(s: &mut State, request: Switchover, out: &mut Vec<Action>) -> Flow {
    let target = request.target.clone().unwrap_or_default();
    let bound = s.switchover_bound();
    let handed_term = request.handed_term;
    s.wait(
        Pending::SwitchoverLabeled(request),
        Action::WaitForLabel {
            target,
            bound,
            handed_term,
        },
        out,
    )
}

/// Issue 19, case 4: in a storm the target took the lease and handed it
/// straight back before this member saw its label; this member held the
/// lease without acting until its wait ran out (11 s), then recorded the
/// request as rejected although it had moved the lease. Now the wait ends
/// when the lease comes back: the request took effect (recorded so), and
/// this member follows the lease at once.
pub(super) fn lease_came_back(
    s: &mut State,
    f: &Facts,
    request: &Switchover,
    out: &mut Vec<Action>,
) -> Flow {
    let target = request.target.clone().unwrap_or_default();
    finish(
        s,
        f,
        request,
        Ok(format!("{target} (which has since handed the lease back)")),
        out,
    );
    s.next([Step::FollowLease]);
    Flow::Continue
}

/// Whether `new` may replace the recorded `lastSwitchover`: only a request
/// taken later (by its holder's clock, to the nanosecond; holders follow
/// each other through the lease, so a later holder took its request
/// later), so that a slow outcome of an older request never overwrites a
/// newer one. A record without a time is replaced.
pub fn supersedes(new: &SwitchoverStatus, recorded: Option<&SwitchoverStatus>) -> bool {
    match (
        new.requested.as_ref(),
        recorded.and_then(|r| r.requested.as_ref()),
    ) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(new), Some(old)) => new.0 > old.0,
    }
}

/// Records the outcome: status, metric, log, Event.
pub(super) fn finish(
    s: &mut State,
    f: &Facts,
    request: &Switchover,
    outcome: Result<String, String>,
    out: &mut Vec<Action>,
) {
    let me = s.settings.me.clone();
    let value = &request.value;
    let (result, message, to) = match outcome {
        Ok(target) => (
            SwitchoverResult::Completed,
            format!("switched over from {me} to {target}"),
            target,
        ),
        Err(why) => (
            SwitchoverResult::Rejected,
            format!("switch-over to {value:?} rejected: {why}"),
            value.clone(),
        ),
    };
    out.push(Action::RecordSwitchover(SwitchoverStatus {
        from: Some(me),
        to,
        requested: Some(Time(request.requested)),
        completed: Some(Time(f.wall_now)),
        result,
        message: Some(message.clone()),
    }));
    let (warning, event_reason, label) = match result {
        SwitchoverResult::Completed => (false, reason::SWITCHOVER_COMPLETED, "completed"),
        SwitchoverResult::Rejected => (true, reason::SWITCHOVER_REJECTED, "rejected"),
    };
    out.push(Action::Metric(Metric::Switchover(label)));
    out.push(Action::Log(
        Level::Info,
        format!("switch-over {label}: {message}"),
    ));
    out.push(Action::Event {
        warning,
        reason: event_reason,
        note: message,
    });
}

/// js7 mode, handing the lease over while JOC runs this member: ask JOC to
/// switch to the target right away, so that JOC's active instance executes
/// it at its next poll rather than after the target's first look. If the
/// hand-over then fails, the lease follows JOC.
fn ask_joc_to_switch_to(s: &State, pod: &str, out: &mut Vec<Action>) {
    let (Some(settings), Some(joc)) = (&s.settings.joc, &s.joc) else {
        return;
    };
    // Without a cluster license the target's JOC would refuse to start
    // JOC's services (docs/joc-facts.md fact 10): no request at all.
    if !joc.confirmed || !settings.licensed {
        return;
    }
    out.push(Action::RequestJocSwitch {
        from: settings.member_id.clone(),
        to: crate::js7::member_id(pod, &settings.data_dir),
        pod: pod.to_owned(),
        report: false,
    });
}

/// Gives the lease to the best ready standby (or releases it) and never
/// takes it again.
pub(super) fn step_down(
    s: &mut State,
    f: &Facts,
    why: &'static str,
    out: &mut Vec<Action>,
) -> Flow {
    s.stepped_down = true;
    s.stepped_down_at = Some(f.now);
    hand_off(s, why.to_owned(), out)
}

/// Stops competing for the lease and, if held, gives it to the best ready
/// standby (or releases it).
pub(super) fn hand_off(s: &mut State, why: String, out: &mut Vec<Action>) -> Flow {
    out.push(Action::SetReady {
        ready: false,
        report: false,
    });
    // js7: the readiness step sets it again only when it differs from
    // what it last set.
    if let Some(joc) = &mut s.joc {
        joc.ready = Some(false);
    }
    if s.active_term.is_none() {
        return Flow::Continue;
    }
    out.push(Action::Publish(Report::Standby));
    s.wait(Pending::StepDownMembers(why), Action::ReadMembers, out)
}

pub(super) fn step_down_members(
    s: &mut State,
    f: &Facts,
    why: String,
    members: Result<Vec<MemberFacts>, String>,
    out: &mut Vec<Action>,
) -> Flow {
    let chosen =
        members.and_then(|members| choose(&Target::Any, &s.settings.me, &candidates(f, &members)));
    match chosen {
        Ok(target) => {
            ask_joc_to_switch_to(s, &target, out);
            s.wait(
                Pending::StepDownHandOver(why),
                Action::HandOver { target },
                out,
            )
        }
        Err(_) => {
            step_down_finish(s, &why, false, out);
            Flow::Continue
        }
    }
}

pub(super) fn step_down_finish(s: &mut State, why: &str, handed: bool, out: &mut Vec<Action>) {
    if !handed {
        out.push(Action::Release);
    }
    super::lease::demote(s, why, out);
    if handed && let Some(joc) = &s.settings.joc {
        // JOC in this pod is still running (the preStop hook holds its
        // stop), so it can execute the new holder's switch request at its
        // next poll; wait for that, bounded, so that JOC hands over cleanly.
        out.push(Action::WaitForJocToLeave {
            period: joc.polling_interval * 2 + s.settings.renew_interval * 2,
        });
    }
}
