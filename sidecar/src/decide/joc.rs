//! js7 mode: keep this member's lease readiness equal to its JOC instance's
//! freshness; as holder, label once JOC confirms, ask JOC to switch, or
//! follow JOC (the pure choice is [`crate::js7::holder_step`]).

use joc_ha_crds::names::reason;

use super::fence::{FenceFacts, FenceWhy, fence_reason};
use super::{
    Action, Facts, FenceDone, Flow, JocReadError, Level, Metric, Pending, Report, State, Step,
};
use crate::js7::{
    HolderStep, JocRun, JocView, holder_step, hostname_of, keeps_waiting_heart_beat, own_health,
    stale_switch_request, unlicensed_holder_step, waiting_holder_step,
};
use crate::lease::{HandOverOutcome, Role};

/// Logs `note` once (until it changes).
fn note(s: &mut State, level: Level, note: String, out: &mut Vec<Action>) {
    if let Some(joc) = &mut s.joc
        && joc.last_note.as_ref() != Some(&note)
    {
        out.push(Action::Log(level, note.clone()));
        joc.last_note = Some(note);
    }
}

pub(super) fn agree(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let ttl = s.settings.lease_ttl;
    let Some(joc) = &mut s.joc else {
        return Flow::Continue;
    };
    // A look comes at least every renew interval: a gap beyond the lease's
    // TTL means this sidecar was frozen (or starved) meanwhile.
    let gap = joc
        .last_look
        .map(|last| f.now.saturating_duration_since(last));
    joc.last_look = Some(f.now);
    if let Some(gap) = gap.filter(|g| *g > ttl) {
        joc.resumed_after = Some(gap);
    }
    // At once, before reading: a thawed JOC may start services any moment.
    if let Some(why) = fence_why(s, None, None) {
        return fence(s, why, None, out);
    }
    s.wait(Pending::JocRead, Action::ReadJoc, out)
}

/// First thing after this sidecar resumed from a freeze longer than the
/// TTL, before the lease is followed (whose role-change command and label
/// take tens of milliseconds): a JOC frozen with it runs on as JOC's active
/// member from the moment it is thawed, so every millisecond counts
/// (docs/joc-facts.md fact 20). Only the lease's own deadline tells here
/// whether this member still holds it.
pub(super) fn fence_if_resumed(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let ttl = s.settings.lease_ttl;
    let Some(joc) = &s.joc else {
        return Flow::Continue;
    };
    let Some(gap) = joc
        .last_look
        .map(|last| f.now.saturating_duration_since(last))
        .filter(|gap| *gap > ttl)
    else {
        return Flow::Continue;
    };
    let holds = matches!(f.role, Role::Active { until, .. } if until > f.now);
    let mut judged = s.clone();
    if !holds {
        judged.active_term = None;
    }
    if let Some(joc) = &mut judged.joc {
        joc.resumed_after = Some(gap);
    }
    let Some(why) = fence_why(&judged, None, None) else {
        return Flow::Continue;
    };
    if let Some(joc) = &mut s.joc {
        joc.last_look = Some(f.now);
        joc.resumed_after = None;
    }
    out.push(Action::Log(
        Level::Warn,
        format!(
            "fencing this member's JOC (SIGKILL of its JVM) before anything else: {}",
            why.note
        ),
    ));
    s.wait(
        Pending::FenceResumed { label: why.label },
        Action::FenceJoc { why: why.note },
        out,
    )
}

/// The fence rule (`decide/fence.rs`) on the state and, if read, JOC's
/// view: `Some` if this member's JOC is to be fenced now.
fn fence_why(s: &State, view: Option<&JocView>, f: Option<&Facts>) -> Option<FenceWhy> {
    let settings = s.settings.joc.as_ref().filter(|j| j.fence)?;
    let joc = s.joc.as_ref()?;
    let me = settings.member_id.as_str();
    let bound = settings.heart_beat_exceeded_interval + settings.polling_interval * 2;
    fence_reason(&FenceFacts {
        holds_lease: s.active_term.is_some(),
        joc_active_is_me: view.map(|v| v.active_member() == Some(me)),
        was_active: joc.was_active,
        instance_fresh: view.map(|v| v.is_ready_member(me)),
        resumed_after: joc.resumed_after,
        active_without_lease_for: joc
            .active_without_lease_since
            .zip(f)
            .map(|(since, f)| f.now.saturating_duration_since(since)),
        active_without_lease_bound: bound,
        kept_waiting: joc.keeping_waiting
            || view.is_some_and(|v| v.confirms(me) && v.waits_for_controller(me)),
        licensed: settings.licensed,
    })
}

/// Fences this member's JOC; `view` goes on to the readiness step.
fn fence(s: &mut State, why: FenceWhy, view: Option<JocView>, out: &mut Vec<Action>) -> Flow {
    out.push(Action::Log(
        Level::Warn,
        format!(
            "fencing this member's JOC (SIGKILL of its JVM): {}",
            why.note
        ),
    ));
    s.wait(
        Pending::Fence {
            label: why.label,
            view: view.map(Box::new),
        },
        Action::FenceJoc { why: why.note },
        out,
    )
}

/// A fence's outcome: say what was stopped; the JVM's memory goes with it.
pub(super) fn fenced(
    s: &mut State,
    label: &'static str,
    result: Result<FenceDone, String>,
    out: &mut Vec<Action>,
) {
    let me = s.settings.me.clone();
    match result {
        Ok(done) => {
            if let Some(joc) = &mut s.joc {
                joc.was_active = false;
                joc.own_fresh = false;
                joc.resumed_after = None;
                joc.active_without_lease_since = None;
            }
            let release = match &done.release {
                Ok(r) => format!(
                    "its JOC_INSTANCES heartbeat {}, the JOC_CLUSTER row {}",
                    if r.heartbeat_reset {
                        "reset to 1970-01-01"
                    } else {
                        "was not there"
                    },
                    if r.cluster_row_deleted {
                        "deleted (the other JOCs elect at their next poll)"
                    } else {
                        "left (it names another member or a switch is pending)"
                    }
                ),
                Err(error) => format!("JOC's clean-shutdown writes failed: {error}"),
            };
            if done.pids.is_empty() {
                out.push(Action::Log(
                    Level::Info,
                    format!("no JOC JVM runs in {me} any more (nothing to fence); {release}"),
                ));
            } else {
                let note = format!(
                    "{me}: JOC's JVM (pid {:?}) SIGKILLed and gone ({label}); {release}; its liveness probe restarts it as a standby",
                    done.pids
                );
                out.push(Action::Log(Level::Warn, note.clone()));
                out.push(Action::Event {
                    warning: true,
                    reason: reason::JOC_FENCED,
                    note,
                });
                out.push(Action::Metric(Metric::JocFenced(label)));
            }
        }
        Err(error) => {
            let text = format!("{me}: cannot fence its JOC ({label}): {error}");
            if s.joc.as_ref().and_then(|j| j.last_note.as_ref()) != Some(&text) {
                out.push(Action::Event {
                    warning: true,
                    reason: reason::JOC_FENCE_FAILED,
                    note: text.clone(),
                });
            }
            note(s, Level::Warn, text, out);
        }
    }
}

/// JOC's tables as read: a fence if due, readiness, then the holder's step.
pub(super) fn read(
    s: &mut State,
    f: &Facts,
    view: Result<JocView, JocReadError>,
    out: &mut Vec<Action>,
) -> Flow {
    if s.settings.joc.is_none() {
        return Flow::Continue;
    }
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
    remember(s, f, &view);
    let why = fence_why(s, Some(&view), Some(f));
    if let Some(joc) = &mut s.joc {
        // Judged with a fresh read: a later gap is a new one.
        joc.resumed_after = None;
    }
    if let Some(why) = why {
        return fence(s, why, Some(view), out);
    }
    readiness(s, f, view, out)
}

/// Whether Kubernetes reported the JVM of JOC's active member gone since
/// the previous look: `MEMBER_ID` names the same member, and its pod's `joc`
/// container has run anew or stopped (every process of the old run is gone
/// then). Kept until `MEMBER_ID` moves; the holder acts on it.
fn note_gone_active(joc: &mut super::JocState, f: &Facts, view: &JocView) {
    let active = view.active_member();
    if joc
        .gone_active
        .as_ref()
        .is_some_and(|g| Some(g.member_id.as_str()) != active)
    {
        joc.gone_active = None;
    }
    let run_of = |pod: &str| f.pods.iter().find(|p| p.name == pod).map(|p| &p.joc_run);
    if let (Some(seen), Some(active)) = (&joc.active_seen, active)
        && seen.member_id == active
        && matches!(seen.run, JocRun::Running(_))
        && seen.started_at.is_some()
        && let Some(run) = run_of(&seen.pod)
        && !matches!(run, JocRun::Unknown)
        && *run != seen.run
    {
        joc.gone_active = Some(seen.clone());
    }
    joc.active_seen = active.map(|member_id| {
        let pod = hostname_of(member_id).to_owned();
        super::ActiveSeen {
            member_id: member_id.to_owned(),
            run: run_of(&pod).cloned().unwrap_or(JocRun::Unknown),
            started_at: view
                .instance(member_id)
                .and_then(|i| i.stamp.started_at.clone()),
            pod,
        }
    });
}

/// What the fence rule remembers of a look at JOC.
fn remember(s: &mut State, f: &Facts, view: &JocView) {
    let holds = s.active_term.is_some();
    let Some(me) = s.settings.joc.as_ref().map(|j| j.member_id.clone()) else {
        return;
    };
    let Some(joc) = &mut s.joc else {
        return;
    };
    // The kubelet started JOC's container anew (or it stopped): every
    // process of the last run is gone, so its JVM can neither serve nor
    // finish a start of services, and the JVM now starting is not hung but
    // young (fact 22). What was seen of the last run is forgotten.
    let run = f.own.as_ref().map(|o| &o.joc_run);
    if let (Some(run), Some(baseline)) = (run, &joc.baseline)
        && !matches!(run, JocRun::Unknown)
        && !baseline.is_for(run)
    {
        joc.was_active = false;
        joc.own_fresh = false;
        joc.own_age = None;
        joc.own_write_seen_at = None;
    }
    note_gone_active(joc, f, view);
    let active_now = view.active_member() == Some(me.as_str());
    // A write seen between two looks proves a live JVM: a restarted pod's
    // sidecar must not take the dead JVM's fresh row for its new JOC
    // (docs/joc-facts.md fact 22), or it would fence the JOC starting up.
    let age = view
        .instances
        .iter()
        .find(|i| i.member_id == me && !i.api_server)
        .map(|i| i.heart_beat_age_s);
    if let (Some(age), Some((then, before))) = (age, joc.own_age) {
        let elapsed = f.now.saturating_duration_since(then).as_secs() as i64;
        if age < before || age + 1 < before.saturating_add(elapsed) {
            joc.own_write_seen_at = Some(f.now);
        }
    }
    joc.own_age = age.map(|a| (f.now, a));
    let live = joc.own_write_seen_at.is_some_and(|t| {
        f.now.saturating_duration_since(t).as_secs() as i64 <= view.exceeded_interval_s
    });
    if active_now && view.is_ready_member(&me) && (live || joc.own_fresh) {
        joc.was_active = true;
    }
    joc.active_without_lease_since = if active_now && !holds {
        Some(joc.active_without_lease_since.unwrap_or(f.now))
    } else {
        None
    };
}

/// Readiness in the lease from this member's JOC instance, then the
/// holder's step.
pub(super) fn readiness(s: &mut State, f: &Facts, view: JocView, out: &mut Vec<Action>) -> Flow {
    let Some(settings) = s.settings.joc.clone() else {
        return Flow::Continue;
    };
    // Only a heartbeat of the JOC process now running counts (fact 22).
    let run = f
        .own
        .as_ref()
        .map_or(JocRun::Unknown, |o| o.joc_run.clone());
    let Some(joc) = &mut s.joc else {
        return Flow::Continue;
    };
    let me = settings.member_id.as_str();
    let (fresh, baseline) = own_health(joc.baseline.as_ref(), &run, &view, me);
    joc.baseline = baseline;
    joc.own_fresh = fresh;
    // A fresh install (fact 9): JOC's active member writes no heartbeat
    // until the first Controller is registered; its sidecar keeps it, and
    // it counts as ready, so that one JOC serves the GUI.
    if view.waits_for_controller(me) {
        joc.controller_seen_at = None;
    } else if joc.keeping_waiting && joc.controller_seen_at.is_none() {
        joc.controller_seen_at = Some(f.now);
    }
    let since_controller = joc
        .controller_seen_at
        .map(|t| f.now.saturating_duration_since(t));
    let grace = settings.controllers_retry + settings.polling_interval * 2;
    let keep = keeps_waiting_heart_beat(&view, me, &run, since_controller, fresh, grace);
    if keep != joc.keeping_waiting {
        out.push(Action::Log(
            if keep || fresh { Level::Info } else { Level::Warn },
            if keep {
                format!("JOC's active member {me} waits for its first Controller (register one in JOC's GUI): this sidecar writes its cluster heartbeat meanwhile, so no other JOC takes over and blocks the same way (docs/joc-facts.md fact 9)")
            } else if fresh {
                format!("JOC {me} writes its own heartbeat again: this sidecar stops writing it")
            } else {
                format!("this sidecar stops writing the cluster heartbeat of JOC {me}: it is no longer JOC's active member waiting for a Controller, or did not resume within {grace:?} of the Controller's registration")
            },
        ));
    }
    joc.keeping_waiting = keep;
    if !keep {
        joc.controller_seen_at = None;
    } else {
        out.push(Action::KeepJocHeartbeat);
    }
    let healthy = fresh || keep;
    out.push(Action::JocHealth { fresh: healthy });
    let ready = healthy && s.may_hold();
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
    let step = if view.waits_for_controller(&me_id) {
        waiting_holder_step(view, &me_id, pod_of)
    } else if licensed {
        holder_step(view, &me_id, previous.as_deref(), pod_of)
    } else {
        unlicensed_holder_step(view, &me_id, pod_of)
    };
    // Kubernetes says the active JOC's JVM is gone: release its row now,
    // so JOC elects at its next poll, not after its heartbeat timeout.
    if let Some(gone) = s.joc.as_mut().and_then(|j| j.gone_active.take())
        && let Some(started_at) = gone.started_at
    {
        out.push(Action::Log(
            Level::Info,
            format!(
                "the joc container of {} (JOC's active member) ran anew or stopped: its JVM is gone; releasing JOC's cluster row so that JOC elects at its next poll",
                gone.pod
            ),
        ));
        out.push(Action::ReleaseGoneJoc {
            member_id: gone.member_id,
            started_at,
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
                    },
                    Action::FenceJoc { why: why.note },
                    out,
                );
            }
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
