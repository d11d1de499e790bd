//! js7 fencing as flows: when to stop this member's JOC (the rule is
//! `decide/fence.rs`), at once after a freeze, and what is said after.

use joc_ha_crds::names::reason;

use super::note;
use crate::decide::fence::{FenceFacts, FenceWhy, fence_reason};
use crate::decide::{Action, Facts, FenceDone, Flow, Level, Metric, Pending, State};
use crate::js7::JocView;
use crate::lease::Role;

/// First thing after this sidecar resumed from a freeze longer than the
/// TTL, before the lease is followed (whose role-change command and label
/// take tens of milliseconds): a JOC frozen with it runs on as JOC's active
/// member from the moment it is thawed, so every millisecond counts
/// (docs/joc-facts.md fact 20). Only the lease's own deadline tells here
/// whether this member still holds it.
pub(in crate::decide) fn fence_if_resumed(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
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
        Pending::FenceThenGoOn { label: why.label },
        Action::FenceJoc {
            switch_to: None,
            end_container: why.ends_container(),
            why: why.note,
        },
        out,
    )
}

/// The fence rule (`decide/fence.rs`) on the state and, if read, JOC's
/// view: `Some` if this member's JOC is to be fenced now.
pub(in crate::decide) fn fence_why(
    s: &State,
    view: Option<&JocView>,
    f: Option<&Facts>,
) -> Option<FenceWhy> {
    let settings = s.settings.joc.as_ref().filter(|j| j.fence)?;
    let joc = s.joc.as_ref()?;
    let me = settings.member_id.as_str();
    let bound = settings.heart_beat_exceeded_interval + settings.polling_interval * 2;
    fence_reason(&FenceFacts {
        holds_lease: s.active_term.is_some(),
        joc_active_is_me: view.map(|v| v.active_member() == Some(me)),
        was_active: joc.was_active,
        instance_fresh: view.map(|v| v.is_ready_member(me)),
        instance_silent: view.map(|v| v.is_silent(me, settings.polling_interval.as_secs() as i64)),
        resumed_after: joc.resumed_after,
        active_without_lease_for: joc
            .active_without_lease_since
            .zip(f)
            .map(|(since, f)| f.now.saturating_duration_since(since)),
        active_without_lease_bound: bound,
        kept_waiting: joc.keeping_waiting
            || view.is_some_and(|v| v.confirms(me) && v.waits_for_controller(me)),
        licensed: settings.licensed,
        // Judged only when a read failed (no view): the database is gone.
        unread_heartbeat_age: joc
            .active_at_last_read
            .filter(|_| view.is_none())
            .zip(f)
            .map(|((at, age), f)| age + f.now.saturating_duration_since(at)),
        silent_after: std::time::Duration::from_secs(
            crate::js7::silent_after_s(
                settings.heart_beat_exceeded_interval.as_secs() as i64,
                settings.polling_interval.as_secs() as i64,
            )
            .max(0) as u64,
        ),
    })
}

/// Fences this member's JOC; `view` goes on to the readiness step.
pub(in crate::decide) fn fence(
    s: &mut State,
    why: FenceWhy,
    view: Option<JocView>,
    out: &mut Vec<Action>,
) -> Flow {
    let view = view.map(Box::new);
    fence_then(s, why, |label| Pending::Fence { label, view }, out)
}

/// Fences this member's JOC while JOC's tables are unreadable; the agenda
/// goes on without another read (the next look reads again).
pub(in crate::decide) fn fence_unread(s: &mut State, why: FenceWhy, out: &mut Vec<Action>) -> Flow {
    fence_then(s, why, |label| Pending::FenceThenGoOn { label }, out)
}

fn fence_then(
    s: &mut State,
    why: FenceWhy,
    then: impl FnOnce(&'static str) -> Pending,
    out: &mut Vec<Action>,
) -> Flow {
    out.push(Action::Log(
        Level::Warn,
        format!(
            "fencing this member's JOC (SIGKILL of its JVM): {}",
            why.note
        ),
    ));
    s.wait(
        then(why.label),
        Action::FenceJoc {
            switch_to: None,
            end_container: why.ends_container(),
            why: why.note,
        },
        out,
    )
}

/// A fence's outcome: say what was stopped; the JVM's memory goes with it.
pub(in crate::decide) fn fenced(
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
                joc.active_at_last_read = None;
                joc.container_left |= done.container_left;
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
                let restart = if done.container_ended {
                    "its container's processes were ended with it: the kubelet starts the container anew, JOC comes back as a standby"
                } else if done.container_left {
                    "its container is ended once the database answers again (JOC's start would fail without it): the kubelet then starts it anew"
                } else {
                    "its liveness probe restarts it as a standby"
                };
                let note = format!(
                    "{me}: JOC's JVM (pid {:?}) SIGKILLed and gone ({label}); {release}; {restart}",
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
