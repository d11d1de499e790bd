//! Following the lease: promote (strip others' active labels, wait out a
//! failsafe predecessor, label), demote (tell the cockpit first, then
//! relabel), failsafe mode while the database is down for everyone, and
//! keeping labels true to the lease.

use std::time::Duration;

use joc_ha_crds::names::reason;
use tokio::time::Instant;

use super::{Action, Facts, Flow, Label, Level, Metric, Pending, PodFacts, Report, State, Step};
use crate::lease::Role;

/// How long a demotion while the elector's status still names us holder
/// waits for that status to catch up (it may trail the role by a moment).
pub const ELECTOR_STATUS_WAIT: Duration = Duration::from_millis(250);

fn info(out: &mut Vec<Action>, message: String) {
    out.push(Action::Log(Level::Info, message));
}

fn warn(out: &mut Vec<Action>, message: String) {
    out.push(Action::Log(Level::Warn, message));
}

/// Members of the cluster other than `me` that carry role=active, sorted.
pub fn other_active_members(pods: &[PodFacts], me: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| p.is_member() && p.name != me && p.is_labeled_active())
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names
}

/// Applies the elector's current role.
pub(super) fn follow_lease(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let held = match f.role {
        Role::Active { term, until } if s.may_hold() && until > f.now => Some((term, until)),
        _ => None,
    };
    match held {
        Some((term, until)) => {
            if s.failsafe_until.take().is_some() {
                info(
                    out,
                    format!("the database is back; failsafe mode ends (term {term})"),
                );
                out.push(Action::Label {
                    pod: s.settings.me.clone(),
                    label: Label::Active,
                    term: Some(term),
                    report: false,
                    context: "cannot clear the failsafe mark",
                });
                if s.active_term != Some(term) {
                    s.active_term = None;
                }
            }
            let report = Report::Active { term, until };
            if s.active_term != Some(term) {
                s.next([Step::Promote { term }, Step::Publish(report)]);
            } else {
                out.push(Action::Publish(report));
            }
        }
        None => {
            if let Some(term) = s.active_term {
                if !s.may_hold() {
                    demote_for(s, f, out);
                } else {
                    s.next([Step::JudgeDatabase {
                        term,
                        deadline: f.now + ELECTOR_STATUS_WAIT,
                    }]);
                }
            }
        }
    }
    Flow::Continue
}

/// Lost the role: did the elector lose the database (then try failsafe),
/// or the lease to another member (then demote)?
pub(super) fn judge_database(
    s: &mut State,
    f: &Facts,
    term: i64,
    deadline: Instant,
    out: &mut Vec<Action>,
) -> Flow {
    if !f.elector.connected || f.elector.failing {
        s.next([Step::Failsafe { term }]);
        return Flow::Continue;
    }
    if !f.elector.holder_is_me || f.now >= deadline {
        demote_for(s, f, out);
        return Flow::Continue;
    }
    s.wait(
        Pending::Elector { term, deadline },
        Action::WaitForElector { until: deadline },
        out,
    )
}

/// Demotes, saying why from the facts.
pub(super) fn demote_for(s: &mut State, f: &Facts, out: &mut Vec<Action>) {
    let why = if s.failsafe_until.is_some() {
        "failsafe mode ended: cut off from the Kubernetes API too, or another member is active"
    } else if f.elector.connected {
        "the lease moved to another member"
    } else {
        "the lease could not be renewed (database unreachable)"
    };
    demote(s, why, out);
}

/// The API server's answer to the failsafe check: stay active while this
/// pod is labeled active and no other member is; nobody can take the lease
/// without the database. Cut off from the API too, the role runs out by
/// itself (isolation).
pub(super) fn failsafe_checked(
    s: &mut State,
    f: &Facts,
    term: i64,
    checked_at: Instant,
    pods: Result<Vec<PodFacts>, String>,
    out: &mut Vec<Action>,
) -> Flow {
    match pods {
        Ok(pods) => {
            let me = &s.settings.me;
            let mine_active = pods.iter().any(|p| &p.name == me && p.is_labeled_active());
            if !mine_active || !other_active_members(&pods, me).is_empty() {
                demote_for(s, f, out);
                return Flow::Continue;
            }
            if s.failsafe_until.is_none() {
                warn(
                    out,
                    format!(
                        "database unreachable for everyone; staying active in failsafe mode (term {term})"
                    ),
                );
                return s.wait(
                    Pending::FailsafeMark { term, checked_at },
                    Action::MarkFailsafe,
                    out,
                );
            }
            s.failsafe_until = Some(checked_at + s.settings.lease_validity);
        }
        Err(error) => warn(
            out,
            format!("failsafe check failed: the Kubernetes API is unreachable: {error}"),
        ),
    }
    failsafe_hold(s, f, term, checked_at, out);
    Flow::Continue
}

pub(super) fn failsafe_marked(
    s: &mut State,
    f: &Facts,
    term: i64,
    checked_at: Instant,
    marked: bool,
    out: &mut Vec<Action>,
) -> Flow {
    if !marked {
        demote_for(s, f, out);
        return Flow::Continue;
    }
    s.failsafe_until = Some(checked_at + s.settings.lease_validity);
    failsafe_hold(s, f, term, checked_at, out);
    Flow::Continue
}

/// Active in failsafe mode until its deadline, then demoted.
fn failsafe_hold(s: &mut State, f: &Facts, term: i64, checked_at: Instant, out: &mut Vec<Action>) {
    match s.failsafe_until {
        Some(until) if until > checked_at => {
            out.push(Action::Publish(Report::Active { term, until }));
        }
        _ => demote_for(s, f, out),
    }
}

/// Gained `term`: strip stale active labels (waiting out a failsafe
/// holder's last role report), then label ourselves. Which pods carry the
/// label is read from the API server itself, not the cache: after an API
/// server restart the cache can be seconds old while its watch relists.
pub(super) fn promote(s: &mut State, term: i64, out: &mut Vec<Action>) -> Flow {
    s.wait(Pending::PromotePods { term }, Action::ListPodsNow, out)
}

/// The pods as the API server has them (or, if it cannot be read, as the
/// cache has them, with each mark read on its own).
pub(super) fn promote_with(
    s: &mut State,
    f: &Facts,
    term: i64,
    live: Result<Vec<PodFacts>, String>,
    out: &mut Vec<Action>,
) -> Flow {
    let me = &s.settings.me;
    match live {
        Ok(pods) => {
            let marks: Vec<(String, bool)> = other_active_members(&pods, me)
                .into_iter()
                .map(|name| {
                    let failsafe = pods.iter().any(|p| p.name == name && p.failsafe);
                    (name, failsafe)
                })
                .collect();
            strip_others(s, term, &marks, out)
        }
        Err(error) => {
            warn(
                out,
                format!("cannot list the cluster's pods before labeling; using the cache: {error}"),
            );
            let others = other_active_members(&f.pods, me);
            if others.is_empty() {
                return strip_others(s, term, &[], out);
            }
            s.wait(
                Pending::PromoteMarks { term },
                Action::ReadFailsafeMarks { pods: others },
                out,
            )
        }
    }
}

/// A holder in failsafe mode demotes when it sees its label go (its mark
/// disappears), but its cockpit may still act on its last failsafe role
/// report until that runs out: each lasts the lease's validity from a check
/// that still saw the label, so at most the validity from the moment the
/// label is gone. The new holder waits that long, not only for the mark: a
/// cockpit busy in a long step has not read the standby report yet.
pub(super) fn strip_others(
    s: &mut State,
    term: i64,
    marks: &[(String, bool)],
    out: &mut Vec<Action>,
) -> Flow {
    for (pod, failsafe) in marks {
        out.push(Action::Label {
            pod: pod.clone(),
            label: Label::Standby,
            term: None,
            report: false,
            context: "cannot remove a stale active label",
        });
        if *failsafe {
            info(
                out,
                format!("waiting for the former holder {pod}'s failsafe role to run out"),
            );
            out.push(Action::WaitOutFailsafe {
                pod: pod.clone(),
                period: s.settings.lease_validity,
            });
        }
    }
    s.next([Step::LabelActive {
        term,
        new_term: true,
    }]);
    Flow::Continue
}

/// Labels this pod active (js7: only once JOC confirms this member).
pub(super) fn label_active(
    s: &mut State,
    term: i64,
    new_term: bool,
    out: &mut Vec<Action>,
) -> Flow {
    if new_term && !s.joc_confirmed() {
        // js7: the label waits until JOC runs this member active.
        s.active_term = Some(term);
        out.push(Action::Metric(Metric::LeaseTerm(term)));
        out.push(Action::Metric(Metric::Takeover));
        info(
            out,
            format!(
                "holding the lease (term {term}); the active label waits for JOC to confirm this member"
            ),
        );
        return Flow::Continue;
    }
    s.wait(
        Pending::LabelActive { term, new_term },
        Action::Label {
            pod: s.settings.me.clone(),
            label: Label::Active,
            term: Some(term),
            report: true,
            context: "cannot label this pod active; retrying",
        },
        out,
    )
}

pub(super) fn labeled_active(
    s: &mut State,
    term: i64,
    new_term: bool,
    ok: bool,
    out: &mut Vec<Action>,
) -> Flow {
    if ok {
        s.active_term = Some(term);
        out.push(Action::Metric(Metric::Role(1)));
        out.push(Action::Metric(Metric::LeaseTerm(term)));
        if new_term {
            out.push(Action::Metric(Metric::Takeover));
        }
        info(out, format!("active: labeled active (term {term})"));
        out.push(Action::Event {
            warning: false,
            reason: reason::BECAME_ACTIVE,
            note: format!(
                "{} became the active member (lease term {term})",
                s.settings.me
            ),
        });
    }
    Flow::Continue
}

/// Lost or gave up the lease: tell the cockpit first, then relabel.
pub(super) fn demote(s: &mut State, why: &str, out: &mut Vec<Action>) {
    out.push(Action::Publish(Report::Standby));
    s.failsafe_until = None;
    if let Some(joc) = &mut s.joc {
        joc.confirmed = false;
    }
    let was = s.active_term.take();
    out.push(Action::Metric(Metric::Role(0)));
    out.push(Action::Metric(Metric::LeaseTerm(0)));
    out.push(Action::Label {
        pod: s.settings.me.clone(),
        label: Label::Standby,
        term: None,
        report: false,
        context: "cannot label this pod standby; retrying",
    });
    if let Some(term) = was {
        info(out, format!("standby (was term {term}): {why}"));
        out.push(Action::Event {
            warning: false,
            reason: reason::DEMOTED,
            note: format!("{} is standby: {why}", s.settings.me),
        });
    }
}

/// Keeps our own label true to the lease and, while active, other pods'
/// active labels off. Corrects hand-made changes within a tick.
pub(super) fn correct_labels(s: &mut State, f: &Facts, out: &mut Vec<Action>) -> Flow {
    let me = s.settings.me.clone();
    let Some(own) = f.pods.iter().find(|p| p.is_member() && p.name == me) else {
        return Flow::Continue;
    };
    let others = other_active_members(&f.pods, &me);
    if s.failsafe_until.is_some() && (!own.is_labeled_active() || !others.is_empty()) {
        demote(s, "failsafe mode ended: another member became active", out);
        return Flow::Continue;
    }
    let wanted = if s.active_term.is_some() && s.joc_confirmed() {
        Label::Active
    } else {
        Label::Standby
    };
    if own.role.as_deref() != Some(wanted.as_str()) {
        info(
            out,
            format!(
                "correcting this pod's role label: wanted {}, found {:?}",
                wanted.as_str(),
                own.role
            ),
        );
        out.push(Action::Label {
            pod: me.clone(),
            label: wanted,
            term: s.active_term,
            report: false,
            context: "cannot correct this pod's role label",
        });
    }
    if s.active_term.is_some() {
        for other in others {
            info(out, format!("removing a stale active label from {other}"));
            out.push(Action::Label {
                pod: other,
                label: Label::Standby,
                term: None,
                report: false,
                context: "cannot remove a stale active label",
            });
        }
    }
    Flow::Continue
}
