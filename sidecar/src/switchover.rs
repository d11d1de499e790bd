//! Switch-over requests (`joc-ha.dev/switchover-to=<pod>|any` on the
//! JocCluster): reading the annotation and choosing or refusing the target.
//! Pure functions; the caller gathers the facts from Kubernetes and the lease.

use joc_ha_crds::names::{COMPONENT_API_SERVER, COMPONENT_MEMBER, SWITCHOVER_TO_ANY};

/// What the annotation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A named pod.
    Pod(String),
    /// The best ready standby.
    Any,
}

impl Request {
    /// Reads the annotation value; the error says why it is malformed.
    pub fn parse(value: &str) -> Result<Request, String> {
        let value = value.trim();
        if value == SWITCHOVER_TO_ANY {
            return Ok(Request::Any);
        }
        if is_dns_label_or_subdomain(value) {
            Ok(Request::Pod(value.to_owned()))
        } else {
            Err(format!(
                "{value:?} is neither a pod name nor {SWITCHOVER_TO_ANY:?}"
            ))
        }
    }

    /// The annotation's text, for status and Events.
    pub fn as_text(&self) -> &str {
        match self {
            Request::Pod(name) => name,
            Request::Any => SWITCHOVER_TO_ANY,
        }
    }
}

fn is_dns_label_or_subdomain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A pod of the cluster as the holder sees it when it handles a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// The pod's `joc-ha.dev/component` label.
    pub component: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Being deleted (has a deletionTimestamp).
    pub terminating: bool,
    /// Its sidecar's heartbeat in the lease database is fresh.
    pub heartbeat_fresh: bool,
}

/// Picks the pod to hand the lease to, or says why the request is refused.
/// `holder` is the member that holds the lease now.
pub fn choose_target(
    request: &Request,
    holder: &str,
    pods: &[Candidate],
) -> Result<String, String> {
    match request {
        Request::Pod(name) => {
            if name == holder {
                return Err(format!("{name} is already the active member"));
            }
            let pod = pods
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| format!("pod {name} is not a member of this cluster"))?;
            eligible(pod).map(|()| pod.name.clone())
        }
        Request::Any => {
            let mut standbys: Vec<&Candidate> = pods
                .iter()
                .filter(|p| p.name != holder && eligible(p).is_ok())
                .collect();
            // Lowest ordinal first, so the choice is predictable.
            standbys.sort_by(|a, b| ordinal_key(&a.name).cmp(&ordinal_key(&b.name)));
            standbys
                .first()
                .map(|p| p.name.clone())
                .ok_or_else(|| "no standby is Ready with a fresh heartbeat".to_owned())
        }
    }
}

fn eligible(pod: &Candidate) -> Result<(), String> {
    match pod.component.as_deref() {
        Some(COMPONENT_MEMBER) => {}
        Some(COMPONENT_API_SERVER) => {
            return Err(format!(
                "{} is an API server; API servers are never active",
                pod.name
            ));
        }
        _ => return Err(format!("pod {} is not a member of this cluster", pod.name)),
    }
    if pod.terminating {
        return Err(format!("{} is being deleted", pod.name));
    }
    if !pod.ready {
        return Err(format!("{} is not Ready", pod.name));
    }
    if !pod.heartbeat_fresh {
        return Err(format!(
            "{}'s sidecar has no fresh heartbeat in the lease database",
            pod.name
        ));
    }
    Ok(())
}

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
            ready,
            terminating: false,
            heartbeat_fresh: fresh,
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
        assert_eq!(Request::parse("any"), Ok(Request::Any));
        assert_eq!(
            Request::parse(" joc-2 "),
            Ok(Request::Pod("joc-2".to_owned()))
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
            assert!(Request::parse(bad).is_err(), "{bad:?} should be malformed");
        }
    }

    #[test]
    fn a_ready_fresh_member_is_accepted() {
        assert_eq!(
            choose_target(&Request::Pod("joc-2".into()), "joc-0", &pods()),
            Ok("joc-2".to_owned())
        );
    }

    #[test]
    fn any_picks_the_lowest_ready_standby() {
        assert_eq!(
            choose_target(&Request::Any, "joc-0", &pods()),
            Ok("joc-2".to_owned())
        );
        assert_eq!(
            choose_target(&Request::Any, "joc-2", &pods()),
            Ok("joc-0".to_owned())
        );
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
                choose_target(&Request::Pod(target.into()), "joc-0", &pods()).expect_err("refused");
            assert!(
                refused.contains(reason),
                "{target}: {refused:?} lacks {reason:?}"
            );
        }
        let only_holder = vec![member("joc-0", true, true)];
        assert!(choose_target(&Request::Any, "joc-0", &only_holder).is_err());
    }

    #[test]
    fn a_terminating_pod_is_refused() {
        let mut all = pods();
        all[2].terminating = true;
        let refused =
            choose_target(&Request::Pod("joc-2".into()), "joc-0", &all).expect_err("refused");
        assert!(refused.contains("being deleted"));
    }
}
