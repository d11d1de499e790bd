//! js7 mode: keep this member's lease readiness equal to its JOC instance's
//! freshness; as holder, label once JOC confirms, ask JOC to switch, or
//! follow JOC (the pure choice is [`crate::js7::holder_step`]).
//! The fence flows are in `fencing.rs`, the holder's in `holder.rs`.

use super::fence::DATABASE_LOST;
use super::{Action, Facts, Flow, JocReadError, Level, Pending, State, Step};
use crate::js7::{ContainerRun, JocView, hostname_of, keeps_waiting_heart_beat, own_health};

mod fencing;
mod holder;

use fencing::{fence, fence_unread, fence_why};
pub(super) use fencing::{fence_if_resumed, fenced};
pub(super) use holder::{followed, holder, post_check, switch_requested};

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
            if let Some(why) = fence_why(s, None, Some(f)).filter(|w| w.label == DATABASE_LOST) {
                return fence_unread(s, why, out);
            }
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
    if let Some(joc) = &mut s.joc
        && std::mem::take(&mut joc.container_left)
    {
        out.push(Action::Log(
            Level::Info,
            "the database answers again: ending the container of the JOC fenced while it was gone, so that the kubelet starts it anew".to_owned(),
        ));
        out.push(Action::EndJocContainer);
    }
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
    if let (Some(seen), Some(active)) = (&joc.active_seen, active)
        && seen.member_id == active
        && matches!(seen.run, ContainerRun::Running(_))
        && seen.started_at.is_some()
        && let Some(run) = f.joc_run_of(&seen.pod)
        && !matches!(run, ContainerRun::Unknown)
        && *run != seen.run
    {
        joc.gone_active = Some(seen.clone());
    }
    joc.active_seen = active.map(|member_id| {
        let pod = hostname_of(member_id).to_owned();
        super::ActiveSeen {
            member_id: member_id.to_owned(),
            run: f.joc_run_of(&pod).cloned().unwrap_or(ContainerRun::Unknown),
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
        && !matches!(run, ContainerRun::Unknown)
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
    joc.active_at_last_read = (active_now && joc.was_active && view.has_ready_member_besides(&me))
        .then_some(view.cluster.as_ref())
        .flatten()
        .map(|c| {
            let age = std::time::Duration::from_secs(c.heart_beat_age_s.max(0) as u64);
            (f.now, age)
        });
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
        .map_or(ContainerRun::Unknown, |o| o.joc_run.clone());
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
