//! js7: when this member's JOC must be fenced (its JVM SIGKILLed), as a pure
//! rule. A JOC runs services by JOC's own `MEMBER_ID`, not by our lease, and
//! a JOC frozen in the middle of its start finishes that start when thawed
//! although it is no longer `MEMBER_ID` (docs/joc-facts.md fact 20); so a
//! member without the lease stops a JOC that is, or was, JOC's active member
//! when it is hung or frozen, or when it keeps the active role too long.
//! The holder's own JOC is never fenced while it holds the lease; it is
//! fenced at the moment it hands the lease on because its JOC hangs.

use std::time::Duration;

/// What the rule looks at, all from one look (the runner's JOC read and
/// the state's memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceFacts {
    /// This member holds the lease and is not handing it on now.
    pub holds_lease: bool,
    /// JOC's `MEMBER_ID` names this member now (None: not read this time).
    pub joc_active_is_me: Option<bool>,
    /// JOC's `MEMBER_ID` named this member, with a fresh instance heartbeat
    /// (a live JVM), at a look since its JVM was last fenced or found gone:
    /// it may be running or finishing a start of services.
    pub was_active: bool,
    /// This member's `JOC_INSTANCES` heartbeat is fresh by JOC's rule (None:
    /// not read this time).
    pub instance_fresh: Option<bool>,
    /// This member's instance heartbeat is silent (older than two polls
    /// short of JOC's timeout), if read.
    pub instance_silent: Option<bool>,
    /// The sidecar itself did not run for this long (frozen, or starved)
    /// before this event; None if it ran on time.
    pub resumed_after: Option<Duration>,
    /// How long JOC's `MEMBER_ID` has named this member while it did not
    /// hold the lease.
    pub active_without_lease_for: Option<Duration>,
    /// How long a JOC may keep the active role without the lease: JOC
    /// executes a switch request at its next poll, so longer is no switch.
    pub active_without_lease_bound: Duration,
    /// This sidecar keeps the heartbeat of its JOC, JOC's active member
    /// blocked until the first Controller is registered (fact 9): silent by
    /// design, not hung.
    pub kept_waiting: bool,
    /// JOC has a cluster license: without one no other JOC would take over
    /// from a fenced one (docs/joc-facts.md fact 10), so the bound rule is off.
    pub licensed: bool,
    /// JOC's tables cannot be read now, and at the last look that could,
    /// JOC's active member was this member's live JOC while another member's
    /// JOC stood ready: how old JOC's cluster heartbeat is by now (its age
    /// then plus the time since).
    pub unread_heartbeat_age: Option<Duration>,
    /// How old a heartbeat may grow before it counts as silent (two polls
    /// short of JOC's timeout, `JocView::silent_after_s`).
    pub silent_after: Duration,
}

/// Why to fence, for the log, the Event and the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceWhy {
    /// A short label for the metric.
    pub label: &'static str,
    pub note: String,
}

/// The reason whose fence leaves JOC's container running until the
/// database answers again.
pub const DATABASE_LOST: &str = "database_lost";

impl FenceWhy {
    /// Whether the fence ends the JVM's container too, so that the kubelet
    /// starts it anew at once. Not while the database is gone: JOC's start
    /// would fail on it and leave the container without a JVM
    /// (docs/joc-facts.md fact 3) until its probes restart it, minutes later;
    /// the runner ends that container once the database answers.
    pub fn ends_container(&self) -> bool {
        self.label != DATABASE_LOST
    }
}

/// Whether to fence this member's JOC now, and why.
pub fn fence_reason(f: &FenceFacts) -> Option<FenceWhy> {
    // The database is gone while this JOC is JOC's active member: once it is
    // back, a standby JOC sees the heartbeat exceeded and takes over at its
    // first poll, while this JOC, which cannot know, runs its services until
    // its own next poll (JOC's row has no version: `DBItemJocCluster`). So it
    // is stopped, the holder's own too, before its heartbeat can look silent;
    // nothing runs JOC's services while the database is gone anyway.
    if f.licensed
        && !f.kept_waiting
        && let Some(age) = f.unread_heartbeat_age
        && age > f.silent_after
    {
        return Some(FenceWhy {
            label: DATABASE_LOST,
            note: format!(
                "JOC's tables are unreadable and its cluster heartbeat, written by this member's JOC as JOC's active member, is {:.1}s old by now: once the database is back another JOC takes over at its first poll, while this one would run its services until its own next poll",
                age.as_secs_f64()
            ),
        });
    }
    if f.holds_lease {
        return None;
    }
    // Only a JVM of this pod that was seen alive and active can be running
    // or finishing a start of services; a JVM starting after a fence (no
    // heartbeat yet) is not fenced again.
    if let Some(gap) = f.resumed_after.filter(|_| f.was_active) {
        return Some(FenceWhy {
            label: "resumed_without_lease",
            note: format!(
                "this sidecar resumed after {:.1}s without running (frozen?) and holds no lease, while its JOC was JOC's active member: a thawed JOC finishes a start it began as active (docs/joc-facts.md fact 20)",
                gap.as_secs_f64()
            ),
        });
    }
    if f.was_active && f.instance_fresh == Some(false) && !f.kept_waiting {
        return Some(FenceWhy {
            label: "hung",
            note: "its JOC instance heartbeat is exceeded (JOC hung or frozen) after it was JOC's active member, and this member holds no lease: a thawed JOC finishes a start it began as active (docs/joc-facts.md fact 20)".to_owned(),
        });
    }
    // A silent JOC that was active while JOC now runs another member: its
    // holder handed it on before JOC's timeout, so the heartbeat may never
    // be seen exceeded before the JOC thaws (the next look comes a second
    // later), and a thawed JOC runs the services it had until its next
    // poll. A JOC that polled again wrote its heartbeat: not silent.
    if f.was_active
        && f.joc_active_is_me == Some(false)
        && f.instance_silent == Some(true)
        && !f.kept_waiting
    {
        return Some(FenceWhy {
            label: "hung",
            note: "its JOC instance heartbeat is silent (JOC hung or frozen) after it was JOC's active member, JOC now runs another member, and this member holds no lease: a thawed JOC runs its services until its next poll (docs/joc-facts.md fact 20)".to_owned(),
        });
    }
    let active_now = f.joc_active_is_me == Some(true);
    if f.licensed
        && active_now
        && f.instance_fresh == Some(true)
        && let Some(for_) = f.active_without_lease_for
        && for_ > f.active_without_lease_bound
    {
        return Some(FenceWhy {
            label: "active_without_lease",
            note: format!(
                "JOC has run this member active for {:.1}s without the lease (more than {:?}: no switch followed)",
                for_.as_secs_f64(),
                f.active_without_lease_bound
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(7);

    fn base() -> FenceFacts {
        FenceFacts {
            holds_lease: false,
            joc_active_is_me: Some(false),
            was_active: false,
            instance_fresh: Some(true),
            instance_silent: Some(false),
            resumed_after: None,
            active_without_lease_for: None,
            active_without_lease_bound: BOUND,
            kept_waiting: false,
            licensed: true,
            unread_heartbeat_age: None,
            silent_after: Duration::from_secs(3),
        }
    }

    #[test]
    fn the_rule_as_a_table() {
        let s = |secs: u64| Some(Duration::from_secs(secs));
        // (case, facts, expected label)
        let rows: Vec<(&str, FenceFacts, Option<&str>)> = vec![
            ("a healthy standby", base(), None),
            (
                "database gone while active, the heartbeat silent by now: even the holder",
                FenceFacts {
                    holds_lease: true,
                    unread_heartbeat_age: s(4),
                    ..base()
                },
                Some("database_lost"),
            ),
            (
                "database gone while active, the heartbeat still young",
                FenceFacts {
                    holds_lease: true,
                    unread_heartbeat_age: s(2),
                    ..base()
                },
                None,
            ),
            (
                "database gone, no license: no other JOC takes over",
                FenceFacts {
                    unread_heartbeat_age: s(30),
                    licensed: false,
                    ..base()
                },
                None,
            ),
            (
                "database gone while this sidecar keeps the heartbeat of a JOC waiting for its first Controller",
                FenceFacts {
                    unread_heartbeat_age: s(30),
                    kept_waiting: true,
                    ..base()
                },
                None,
            ),
            (
                "handed on while silent, JOC runs another member, still silent",
                FenceFacts {
                    was_active: true,
                    joc_active_is_me: Some(false),
                    instance_silent: Some(true),
                    ..base()
                },
                Some("hung"),
            ),
            (
                "silent but JOC still runs it: the holder hands on, no fence yet",
                FenceFacts {
                    was_active: true,
                    joc_active_is_me: Some(true),
                    instance_silent: Some(true),
                    ..base()
                },
                None,
            ),
            (
                "a former active JOC that polled again (not silent)",
                FenceFacts {
                    was_active: true,
                    joc_active_is_me: Some(false),
                    instance_silent: Some(false),
                    ..base()
                },
                None,
            ),
            (
                "silent, another member active, but never seen active",
                FenceFacts {
                    joc_active_is_me: Some(false),
                    instance_silent: Some(true),
                    ..base()
                },
                None,
            ),
            (
                "a frozen standby that never was active",
                FenceFacts {
                    instance_fresh: Some(false),
                    ..base()
                },
                None,
            ),
            (
                "the holder's own hung JOC while it holds",
                FenceFacts {
                    holds_lease: true,
                    joc_active_is_me: Some(true),
                    was_active: true,
                    instance_fresh: Some(false),
                    resumed_after: s(30),
                    active_without_lease_for: s(60),
                    ..base()
                },
                None,
            ),
            (
                "lost the lease, JOC still active here and healthy, within the bound (a switch is on its way)",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    was_active: true,
                    active_without_lease_for: s(2),
                    ..base()
                },
                None,
            ),
            (
                "lost the lease, JOC still active here beyond the bound",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    was_active: true,
                    active_without_lease_for: s(8),
                    ..base()
                },
                Some("active_without_lease"),
            ),
            (
                "beyond the bound without a license: no other JOC would take over",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    was_active: true,
                    active_without_lease_for: s(8),
                    licensed: false,
                    ..base()
                },
                None,
            ),
            (
                "no lease, JOC active here and hung",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    was_active: true,
                    instance_fresh: Some(false),
                    ..base()
                },
                Some("hung"),
            ),
            (
                "no lease, JOC active here and silent while it waits for its first Controller (fact 9)",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    was_active: true,
                    instance_fresh: Some(false),
                    kept_waiting: true,
                    ..base()
                },
                None,
            ),
            (
                "no lease, was active, MEMBER_ID moved away, JOC frozen mid-start",
                FenceFacts {
                    was_active: true,
                    instance_fresh: Some(false),
                    ..base()
                },
                Some("hung"),
            ),
            (
                "JOC_CLUSTER still names this member, a new JVM starts after a fence (no heartbeat yet)",
                FenceFacts {
                    joc_active_is_me: Some(true),
                    instance_fresh: Some(false),
                    active_without_lease_for: s(60),
                    ..base()
                },
                None,
            ),
            (
                "was active, switched away cleanly, healthy",
                FenceFacts {
                    was_active: true,
                    ..base()
                },
                None,
            ),
            (
                "the sidecar resumed after a freeze without the lease, JOC was active",
                FenceFacts {
                    joc_active_is_me: None,
                    instance_fresh: None,
                    was_active: true,
                    resumed_after: s(12),
                    ..base()
                },
                Some("resumed_without_lease"),
            ),
            (
                "the sidecar resumed after a freeze, its JOC never was active",
                FenceFacts {
                    joc_active_is_me: None,
                    instance_fresh: None,
                    resumed_after: s(12),
                    ..base()
                },
                None,
            ),
            (
                "not read this time and no freeze: nothing to judge",
                FenceFacts {
                    joc_active_is_me: None,
                    instance_fresh: None,
                    was_active: true,
                    ..base()
                },
                None,
            ),
        ];
        for (case, facts, expected) in rows {
            assert_eq!(
                fence_reason(&facts).map(|w| w.label),
                expected,
                "{case}: {facts:?}"
            );
        }
    }
}
