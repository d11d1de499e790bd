//! Who may receive the lease in a switch-over, step-down or hand-over, and
//! whom `any` means. One rule, pure, shared by the sidecar's check
//! ([`crate::decide`]) and, through [`choose`], by the lease's own hand-over.
//!
//! **The rule.** A target must be a cluster member (not an API server),
//! ready for the lease (`joc_ha_member.ready`: in js7 mode its JOC instance
//! heartbeats), with a fresh heartbeat in the lease database, and, where the
//! caller sees Kubernetes, a pod that is Ready and not being deleted. The
//! holder itself is never a target.
//!
//! **`any`** picks the eligible member with the lowest StatefulSet ordinal
//! (then the lowest name). Chosen over "the freshest heartbeat" because
//! every eligible member's heartbeat is fresh by definition, and among fresh
//! ones the age only says where in its renew interval a member happened to
//! be when the holder looked: it carries no health signal, so it made the
//! choice random. The lowest ordinal is predictable for users (`kubectl
//! annotate ... =any` moves to the first healthy standby), reproducible in
//! tests, and the same whoever asks.

use joc_ha_crds::names::{COMPONENT_API_SERVER, COMPONENT_MEMBER, SWITCHOVER_TO_ANY};

/// What the switch-over annotation (or a step-down) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A named pod.
    Pod(String),
    /// The best eligible standby (see the module's `any` policy).
    Any,
}

impl Target {
    /// Reads the annotation value; the error says why it is malformed.
    pub fn parse(value: &str) -> Result<Target, String> {
        let value = value.trim();
        if value == SWITCHOVER_TO_ANY {
            return Ok(Target::Any);
        }
        if joc_ha_crds::pods::is_pod_name(value) {
            Ok(Target::Pod(value.to_owned()))
        } else {
            Err(format!(
                "{value:?} is neither a pod name nor {SWITCHOVER_TO_ANY:?}"
            ))
        }
    }
}

/// A possible target as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// The pod's `joc-ha.dev/component` label, or the lease's member kind
    /// ([`COMPONENT_MEMBER`] / [`COMPONENT_API_SERVER`]).
    pub component: Option<String>,
    /// Known to the lease database, and with `ready` set there. `None`: the
    /// caller does not know (it then relies on the hand-over's own check).
    pub lease_ready: Option<bool>,
    /// Its heartbeat in the lease database is fresh.
    pub heartbeat_fresh: bool,
    /// What Kubernetes says of its pod; `None` when the caller cannot see
    /// Kubernetes (the lease's hand-over).
    pub pod: Option<PodState>,
}

/// The Kubernetes side of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodState {
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// Being deleted (has a deletionTimestamp).
    pub terminating: bool,
    /// Named in the JocCluster's `joc-ha.dev/fenced-members`.
    pub fenced: bool,
}

/// Whether `candidate` may receive the lease from `holder`; the error says
/// why not, in words for status and Events.
pub fn check(candidate: &Candidate, holder: &str) -> Result<(), String> {
    let name = &candidate.name;
    if name == holder {
        return Err(format!("{name} is already the active member"));
    }
    match candidate.component.as_deref() {
        Some(COMPONENT_MEMBER) => {}
        Some(COMPONENT_API_SERVER) => {
            return Err(format!(
                "{name} is an API server; API servers are never active"
            ));
        }
        _ => return Err(format!("pod {name} is not a member of this cluster")),
    }
    if let Some(pod) = candidate.pod {
        if pod.terminating {
            return Err(format!("{name} is being deleted"));
        }
        if pod.fenced {
            return Err(format!(
                "{name} is fenced (`kubectl joc unfence {name}` lets it take part again)"
            ));
        }
        if !pod.ready {
            return Err(format!("{name} is not Ready"));
        }
    }
    if !candidate.heartbeat_fresh {
        return Err(format!(
            "{name}'s sidecar has no fresh heartbeat in the lease database"
        ));
    }
    if candidate.lease_ready == Some(false) {
        return Err(format!(
            "{name} is not ready for the lease (in js7 mode: its JOC instance has no fresh heartbeat)"
        ));
    }
    Ok(())
}

/// The member to hand the lease to, or why there is none.
pub fn choose(target: &Target, holder: &str, candidates: &[Candidate]) -> Result<String, String> {
    match target {
        Target::Pod(name) => {
            if name == holder {
                return Err(format!("{name} is already the active member"));
            }
            let candidate = candidates
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| format!("pod {name} is not a member of this cluster"))?;
            check(candidate, holder).map(|()| candidate.name.clone())
        }
        Target::Any => candidates
            .iter()
            .filter(|c| check(c, holder).is_ok())
            .min_by(|a, b| ordinal_key(&a.name).cmp(&ordinal_key(&b.name)))
            .map(|c| c.name.clone())
            .ok_or_else(|| "no standby is Ready with a fresh heartbeat".to_owned()),
    }
}

/// Sorts by StatefulSet ordinal (the number after the last `-`), names
/// without one last.
fn ordinal_key(name: &str) -> (u64, &str) {
    let ordinal = name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (ordinal, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ready: bool, fresh: bool) -> Candidate {
        Candidate {
            name: name.to_owned(),
            component: Some(COMPONENT_MEMBER.to_owned()),
            lease_ready: None,
            heartbeat_fresh: fresh,
            pod: Some(PodState {
                ready,
                terminating: false,
                fenced: false,
            }),
        }
    }

    fn pods() -> Vec<Candidate> {
        vec![
            member("joc-0", true, true),
            member("joc-1", false, true),
            member("joc-2", true, true),
            member("joc-3", true, false),
            Candidate {
                component: Some(COMPONENT_API_SERVER.to_owned()),
                ..member("joc-api-x", true, true)
            },
        ]
    }

    #[test]
    fn parses_pod_names_and_any() {
        assert_eq!(Target::parse("any"), Ok(Target::Any));
        assert_eq!(
            Target::parse(" joc-2 "),
            Ok(Target::Pod("joc-2".to_owned()))
        );
        for bad in [
            "",
            "Joc-2",
            "joc_2",
            "-joc",
            "joc-",
            "a b",
            &"x".repeat(254),
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should be malformed");
        }
    }

    #[test]
    fn a_ready_fresh_member_is_accepted() {
        assert_eq!(
            choose(&Target::Pod("joc-2".into()), "joc-0", &pods()),
            Ok("joc-2".to_owned())
        );
    }

    #[test]
    fn any_picks_the_lowest_ordinal_eligible_standby() {
        assert_eq!(
            choose(&Target::Any, "joc-0", &pods()),
            Ok("joc-2".to_owned())
        );
        assert_eq!(
            choose(&Target::Any, "joc-2", &pods()),
            Ok("joc-0".to_owned())
        );
        // Ordinals compare as numbers, not text.
        let many = vec![member("joc-10", true, true), member("joc-9", true, true)];
        assert_eq!(choose(&Target::Any, "joc-0", &many), Ok("joc-9".to_owned()));
    }

    #[test]
    fn every_rejection_says_why() {
        let cases = [
            ("joc-9", "not a member"),
            ("joc-api-x", "API server"),
            ("joc-1", "not Ready"),
            ("joc-3", "heartbeat"),
            ("joc-0", "already the active member"),
        ];
        for (target, reason) in cases {
            let refused =
                choose(&Target::Pod(target.into()), "joc-0", &pods()).expect_err("refused");
            assert!(
                refused.contains(reason),
                "{target}: {refused:?} lacks {reason:?}"
            );
        }
        let only_holder = vec![member("joc-0", true, true)];
        assert!(choose(&Target::Any, "joc-0", &only_holder).is_err());
    }

    #[test]
    fn a_terminating_pod_is_refused() {
        let mut all = pods();
        all[2].pod = Some(PodState {
            ready: true,
            terminating: true,
            fenced: false,
        });
        let refused = choose(&Target::Pod("joc-2".into()), "joc-0", &all).expect_err("refused");
        assert!(refused.contains("being deleted"));
    }

    #[test]
    fn a_fenced_member_is_refused_and_skipped_by_any() {
        let mut all = pods();
        all[2].pod = Some(PodState {
            ready: true,
            terminating: false,
            fenced: true,
        });
        let refused = choose(&Target::Pod("joc-2".into()), "joc-0", &all).expect_err("refused");
        assert!(refused.contains("joc-2 is fenced"), "{refused}");
        assert_eq!(choose(&Target::Any, "joc-2", &all), Ok("joc-0".to_owned()));
        assert_eq!(
            choose(&Target::Any, "joc-0", &all),
            Err("no standby is Ready with a fresh heartbeat".to_owned())
        );
    }

    #[test]
    fn a_member_not_ready_in_the_lease_is_refused_and_skipped_by_any() {
        let mut all = pods();
        all[0].lease_ready = Some(false);
        let refused = choose(&Target::Pod("joc-0".into()), "joc-2", &all).expect_err("refused");
        assert!(refused.contains("not ready for the lease"), "{refused}");
        assert_eq!(
            choose(&Target::Any, "joc-2", &all),
            Err("no standby is Ready with a fresh heartbeat".to_owned())
        );
    }

    #[test]
    fn without_a_kubernetes_view_the_lease_facts_decide() {
        // How the lease's hand-over sees its members: no pod state.
        let rows = vec![
            Candidate {
                pod: None,
                lease_ready: Some(true),
                ..member("joc-1", false, true)
            },
            Candidate {
                pod: None,
                lease_ready: Some(true),
                ..member("joc-2", false, false)
            },
        ];
        assert_eq!(choose(&Target::Any, "joc-0", &rows), Ok("joc-1".to_owned()));
    }
}
