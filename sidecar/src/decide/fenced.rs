//! A member the user fenced (`kubectl joc fence`, the JocCluster annotation
//! `joc-ha.dev/fenced-members`, see `joc_ha_crds::fencing`): not to be
//! confused with fencing JOC's JVM (`fence.rs`), which the sidecar does by
//! itself. A fenced member gives up the lease the way a pod that left the
//! Service does: not ready in the lease, the lease handed to the best ready
//! standby if held (the lease released if there is none), and never taken
//! or received until it is unfenced. Its JOC keeps running as a standby; in
//! js7 mode the holder never follows JOC to a fenced member but asks JOC to
//! switch back (`joc/holder.rs`). A malformed annotation changes nothing.

use joc_ha_crds::names::{ANNOTATION_FENCED_MEMBERS, reason};

use super::{Action, Facts, Flow, Level, State, Step};

pub(super) fn check(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let Some(cluster) = &f.cluster else {
        return Flow::Continue;
    };
    let fenced = match &cluster.fenced {
        Ok(fenced) => fenced.contains(&s.settings.me),
        Err(error) => {
            if s.fencing_unreadable.as_ref() != Some(error) {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "{error}; this member stays {} as before",
                        if s.fenced { "fenced" } else { "unfenced" }
                    ),
                ));
                s.fencing_unreadable = Some(error.clone());
            }
            return Flow::Continue;
        }
    };
    s.fencing_unreadable = None;
    let me = s.settings.me.clone();
    match (s.fenced, fenced) {
        (false, true) => {
            s.fenced = true;
            let note = format!(
                "{me} is fenced ({ANNOTATION_FENCED_MEMBERS}): it gives up the lease{} and neither takes nor receives it until `kubectl joc unfence {me}`",
                if s.active_term.is_some() {
                    " to the best ready standby"
                } else {
                    ""
                }
            );
            out.push(Action::Log(Level::Info, note.clone()));
            out.push(Action::Event {
                warning: false,
                reason: reason::MEMBER_FENCED,
                note,
            });
            s.next([Step::HandOff(format!("{me} is fenced"))]);
        }
        (true, false) => {
            s.fenced = false;
            let note = format!("{me} is no longer fenced: it takes part in the lease again");
            out.push(Action::Log(Level::Info, note.clone()));
            out.push(Action::Event {
                warning: false,
                reason: reason::MEMBER_UNFENCED,
                note,
            });
            super::pod::become_eligible(s, out);
        }
        _ => {}
    }
    Flow::Continue
}
