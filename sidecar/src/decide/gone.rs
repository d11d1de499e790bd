//! Kubernetes' word that another member's lease is held by nobody: the
//! kubelet reports that both the sidecar and the `joc` container of the
//! holder's pod ran anew or stopped since this sidecar first saw that
//! holder's term. Every process that could act under that term is gone
//! then, so the lease need not wait out the rule for a holder that may not
//! know it lost its session (MariaDB: `hold + margin` after its last
//! renew). The elector still takes over only once the holder's session
//! lock is free, with the term and session it saw (`lease::decide`).

use super::state::HolderSeen;
use super::{Action, Facts, Flow, Level, Pending, State};
use crate::js7::ContainerRun;

/// Remembers the live holder's container runs at its term's first sight,
/// and tells the elector once both have changed.
pub(super) fn watch_holder(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    if let Some(pod) = unread_holder(s, f) {
        s.looked_for_label = Some(pod.clone());
        return s.wait(Pending::LeaseLooked, Action::LookAtLease { pod }, out);
    }
    let Some((holder, term)) = f
        .elector
        .live_holder
        .as_ref()
        .filter(|(holder, _)| *holder != s.settings.me)
    else {
        s.holder_seen = None;
        return Flow::Continue;
    };
    let pod = f.pods.iter().find(|p| &p.name == holder);
    let runs = pod.map(|p| (p.sidecar_run.clone(), p.joc_run.clone()));
    match &mut s.holder_seen {
        Some(seen) if seen.member == *holder && seen.term == *term => {
            if let Some((sidecar, joc)) = &runs {
                // Not known at first sight (a sidecar that starts sees the
                // lease before the pods' status): the first run seen is
                // the holder's or a later one, which ends only after it.
                adopt_if_unknown(&mut seen.sidecar_run, sidecar);
                adopt_if_unknown(&mut seen.joc_run, joc);
            }
            if !seen.confirmed
                && let Some((sidecar, joc)) = &runs
                && ran_anew(&seen.sidecar_run, sidecar)
                && ran_anew(&seen.joc_run, joc)
            {
                seen.confirmed = true;
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "Kubernetes reports the sidecar and joc containers of {holder} (lease \
                         holder, term {term}) ran anew or stopped: nothing acts under that term; \
                         the lease may be taken as soon as its session lock is free"
                    ),
                ));
                out.push(Action::ConfirmHolderGone {
                    member: holder.clone(),
                    term: *term,
                });
            }
        }
        _ => {
            let (sidecar_run, joc_run) =
                runs.unwrap_or((ContainerRun::Unknown, ContainerRun::Unknown));
            s.holder_seen = Some(HolderSeen {
                member: holder.clone(),
                term: *term,
                sidecar_run,
                joc_run,
                confirmed: false,
            });
        }
    }
    Flow::Continue
}

/// A standby reads the lease once per TTL where the product's heartbeat
/// does not return it (MariaDB, MySQL): a crash of a holder it has not yet
/// read would find no baseline of that holder's runs, and the take-over
/// would wait out the rule for a holder blind to its session's end. So
/// when another member's pod is labeled active (a holder labels itself
/// once it acts) and the lease as last read does not name it, read now:
/// once per labeled pod, and look at the holder's runs right after.
fn unread_holder(s: &mut State, f: &Facts) -> Option<String> {
    if s.active_term.is_some() {
        return None;
    }
    let labeled = f
        .pods
        .iter()
        .find(|p| p.is_member() && p.is_labeled_active() && p.name != s.settings.me)
        .map(|p| p.name.clone());
    let known = |pod: &str| {
        f.elector
            .live_holder
            .as_ref()
            .is_some_and(|(holder, _)| holder == pod)
    };
    match labeled {
        Some(pod) if !known(&pod) && s.looked_for_label.as_ref() != Some(&pod) => Some(pod),
        Some(_) => None,
        None => {
            s.looked_for_label = None;
            None
        }
    }
}

fn adopt_if_unknown(seen: &mut ContainerRun, now: &ContainerRun) {
    if matches!(seen, ContainerRun::Unknown) && matches!(now, ContainerRun::Running(_)) {
        *seen = now.clone();
    }
}

/// Whether the container that ran as `then` no longer does: it stopped or
/// runs anew. A run not known at first sight proves nothing.
fn ran_anew(then: &ContainerRun, now: &ContainerRun) -> bool {
    matches!(then, ContainerRun::Running(_)) && !matches!(now, ContainerRun::Unknown) && now != then
}
