//! What the sidecar reads of JOC's cluster tables, and what the lease
//! holder does about it (pure, unit-tested).

use std::time::Duration;

/// The row `JOC_CLUSTER` (id `cluster`): JOC's active member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub member_id: String,
    /// Whole seconds since `HEART_BEAT`, by the database's UTC clock.
    pub heart_beat_age_s: i64,
    pub switch_member_id: Option<String>,
    pub switch_heart_beat_age_s: Option<i64>,
}

/// A row of `JOC_INSTANCES`: one JOC instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRow {
    pub member_id: String,
    /// Whole seconds since `HEART_BEAT`, by the database's UTC clock.
    pub heart_beat_age_s: i64,
    pub api_server: bool,
    /// `STARTED_AT` and `HEART_BEAT` as the database holds them.
    pub stamp: InstanceStamp,
}

/// `STARTED_AT` and `HEART_BEAT` of an instance row as text, only ever
/// compared with an earlier read, never parsed: a change proves that a JOC
/// process wrote the row since, without trusting any clock (JOC writes
/// `STARTED_AT` from the JVM's clock, docs/joc-facts.md fact 18, in a zone
/// that JOC-2206 changed between releases).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceStamp {
    pub started_at: Option<String>,
    pub heart_beat: Option<String>,
}

/// JOC's cluster state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JocView {
    /// None while no JOC instance is active (no row).
    pub cluster: Option<ClusterRow>,
    pub instances: Vec<InstanceRow>,
    /// JOC's `cluster_heart_beat_exceeded_interval`.
    pub exceeded_interval_s: i64,
}

impl JocView {
    pub fn new(
        cluster: Option<ClusterRow>,
        instances: Vec<InstanceRow>,
        exceeded_interval: Duration,
    ) -> JocView {
        JocView {
            cluster,
            instances,
            exceeded_interval_s: exceeded_interval.as_secs() as i64,
        }
    }

    /// JOC's rule (`JocCluster.isHeartBeatExceeded`): strictly more than
    /// the interval, in whole seconds.
    fn exceeded(&self, age_s: i64) -> bool {
        age_s > self.exceeded_interval_s
    }

    /// JOC's active member, if any.
    pub fn active_member(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.member_id.as_str())
    }

    /// A cluster member (not an API server) whose JOC heartbeat is fresh:
    /// the only kind that may take or receive the lease, and the only kind
    /// JOC's `switch_member` accepts as target.
    pub fn is_ready_member(&self, member_id: &str) -> bool {
        self.instances.iter().any(|i| {
            i.member_id == member_id && !i.api_server && !self.exceeded(i.heart_beat_age_s)
        })
    }

    /// The `JOC_INSTANCES` row of `member_id`.
    pub fn instance(&self, member_id: &str) -> Option<&InstanceRow> {
        self.instances.iter().find(|i| i.member_id == member_id)
    }

    /// Whether `member_id` is an API-server instance.
    pub fn is_api_server(&self, member_id: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.member_id == member_id && i.api_server)
    }

    /// JOC's record says `member_id` is active (`JOC_CLUSTER.MEMBER_ID`).
    /// After a switch the new member's services start at its own next poll,
    /// within one polling interval; waiting for that too would only keep
    /// the Service empty longer, since the old member stopped its services
    /// before it wrote the new `MEMBER_ID`.
    pub fn confirms(&self, member_id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.member_id == member_id)
    }

    /// A switch request to `member_id` that JOC will still execute.
    pub fn switch_pending_to(&self, member_id: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            c.switch_member_id.as_deref() == Some(member_id)
                && c.switch_heart_beat_age_s
                    .is_some_and(|age| !self.exceeded(age))
        })
    }
}

/// The run of this pod's `joc` container, from its own pod's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JocRun {
    /// No status for it (the pod is not seen yet, or it has no such
    /// container): the sidecar's own start stands for the run's start.
    Unknown,
    /// Not running (terminated, waiting to restart): no JOC process.
    Stopped,
    /// Running; the text names this run (restart count and start time, as
    /// the kubelet reports them, compared and never parsed).
    Running(String),
}

/// What this member's sidecar saw of its own `JOC_INSTANCES` row when it
/// first saw the current run of its `joc` container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBaseline {
    /// The run it was taken for (None: [`JocRun::Unknown`]).
    pub run: Option<String>,
    /// The row then (None: no row).
    pub stamp: Option<InstanceStamp>,
    /// The row changed since: the process now running wrote it.
    pub proven: bool,
}

impl HealthBaseline {
    /// Whether it was taken for this run of the JOC container: if not, the
    /// health it proved is void ([`own_health`] starts afresh).
    pub fn is_for(&self, run: &JocRun) -> bool {
        match run {
            JocRun::Stopped => false,
            JocRun::Unknown => self.run.is_none(),
            JocRun::Running(id) => self.run.as_deref() == Some(id.as_str()),
        }
    }
}

/// Whether this member's JOC counts as healthy (ready for the lease, pod
/// Ready), and the baseline to keep for the next look.
///
/// docs/joc-facts.md fact 22: after a crash the previous JVM's heartbeat
/// stays fresh for up to the exceeded interval, while the new JVM needs
/// 10–20 s or more before it heartbeats. So a heartbeat counts only once the
/// row changed after the sidecar saw the container's current run start:
/// clock-free, at the price of one JOC poll after a sidecar restart. A new
/// run (restart count or start time changed) takes a new baseline; a
/// stopped container is never healthy. What remains is the time between the
/// container's restart and the kubelet reporting it.
pub fn own_health(
    baseline: Option<&HealthBaseline>,
    run: &JocRun,
    view: &JocView,
    me: &str,
) -> (bool, Option<HealthBaseline>) {
    let run = match run {
        JocRun::Stopped => return (false, None),
        JocRun::Unknown => None,
        JocRun::Running(id) => Some(id.clone()),
    };
    let stamp = view.instance(me).map(|i| i.stamp.clone());
    let Some(baseline) = baseline.filter(|b| b.run == run) else {
        return (
            false,
            Some(HealthBaseline {
                run,
                stamp,
                proven: false,
            }),
        );
    };
    let proven = baseline.proven || (stamp.is_some() && stamp != baseline.stamp);
    let healthy = proven && view.is_ready_member(me);
    (
        healthy,
        Some(HealthBaseline {
            proven,
            ..baseline.clone()
        }),
    )
}

/// What the lease holder does next about JOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderStep {
    /// JOC runs this member active: it may carry the `active` label.
    Confirmed,
    /// JOC is on its way; nothing to do now (the reason, for the log).
    Wait(&'static str),
    /// Ask JOC to make this member active.
    RequestSwitch,
    /// JOC made another ready member active by itself: hand the lease to
    /// this pod.
    FollowJoc(String),
}

/// The holder's decision. `previous_active` is JOC's active member at the
/// sidecar's previous look (None when unknown); `pod_of` maps a ready
/// member id to its pod if that pod is a lease member that may receive it.
pub fn holder_step(
    view: &JocView,
    me: &str,
    previous_active: Option<&str>,
    pod_of: impl Fn(&str) -> Option<String>,
) -> HolderStep {
    let cluster = match settled(view, me) {
        Ok(cluster) => cluster,
        Err(step) => return step,
    };
    let moved_by_itself = previous_active.is_some_and(|previous| previous != cluster.member_id)
        && !view.switch_pending_to(me);
    if moved_by_itself
        && view.is_ready_member(&cluster.member_id)
        && let Some(pod) = pod_of(&cluster.member_id)
    {
        return HolderStep::FollowJoc(pod);
    }
    if view.switch_pending_to(me) {
        return HolderStep::Wait(
            "asked JOC to switch to this member; JOC executes it at its next poll, or once the old active member's heartbeat is exceeded",
        );
    }
    HolderStep::RequestSwitch
}

/// The steps every holder takes before anything else: wait while JOC has no
/// active member, done when JOC runs this one; else JOC's cluster row.
fn settled<'v>(view: &'v JocView, me: &str) -> Result<&'v ClusterRow, HolderStep> {
    let Some(cluster) = &view.cluster else {
        // JOC deleted its row (clean shutdown of the active instance) or
        // never had one: its instances elect one at their next poll.
        return Err(HolderStep::Wait(
            "JOC has no active member yet; its instances elect one at their next poll",
        ));
    };
    if view.confirms(me) {
        return Err(HolderStep::Confirmed);
    }
    Ok(cluster)
}

/// A switch request in `JOC_CLUSTER` that the lease holder must take away
/// (set both `SWITCH_*` columns back to NULL, if the request is still the
/// one read), and why. JOC clears a request only when its target executes
/// it, so each of these would otherwise stay for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSwitchRequest {
    pub switch_member_id: String,
    pub why: &'static str,
}

/// The lease holder's care of JOC's pending switch request: which request,
/// if any, must be cleared. `polling_interval_s` is JOC's
/// `cluster_polling_interval`; a request JOC can execute is executed at the
/// active member's next poll, so one older than two polls that is not on its
/// way to the holder is left over.
pub fn stale_switch_request(
    view: &JocView,
    me: &str,
    polling_interval_s: i64,
) -> Option<StaleSwitchRequest> {
    let cluster = view.cluster.as_ref()?;
    let target = cluster.switch_member_id.as_deref()?;
    let age = cluster.switch_heart_beat_age_s;
    let stale = |why| {
        Some(StaleSwitchRequest {
            switch_member_id: target.to_owned(),
            why,
        })
    };
    // docs/joc-facts.md fact 14 (JocCluster.java, trySwitchActiveMemberOnProcess): the
    // active instance executes a request without looking at its target, and
    // an API server never starts cluster services: no active JOC at all.
    if view.is_api_server(target) {
        return stale(
            "it names an API server, which JOC would make its active member without ever running cluster services",
        );
    }
    // docs/joc-facts.md fact 13: a request whose SWITCH_HEART_BEAT is exceeded is skipped
    // at every poll and never cleared, and while SWITCH_HEART_BEAT is set JOC
    // refuses a Controller cluster switch-over
    // (ControllerResourceModifyClusterImpl, isSwitchingJocInstances).
    if age.is_none_or(|age| view.exceeded(age)) {
        return stale(
            "JOC skips a request older than its heartbeat timeout and never clears it; left behind, it blocks Controller switch-overs",
        );
    }
    let old = age.is_some_and(|age| age > 2 * polling_interval_s.max(1));
    if old && target == cluster.member_id {
        return stale("JOC already runs its target active");
    }
    if old && target != me {
        return stale("it names a member that does not hold the lease");
    }
    if old && !view.is_ready_member(target) {
        return stale("its target's JOC instance has no fresh heartbeat");
    }
    None
}

/// The holder's decision without a JOC cluster license (docs/joc-facts.md fact 10,
/// AMH: the target of a switch then refuses to start services, so a switch
/// request would leave no member running them). The holder never asks JOC
/// to switch; the lease follows JOC's own active member instead, and only
/// the member JOC runs carries the label.
pub fn unlicensed_holder_step(
    view: &JocView,
    me: &str,
    pod_of: impl Fn(&str) -> Option<String>,
) -> HolderStep {
    let cluster = match settled(view, me) {
        Ok(cluster) => cluster,
        Err(step) => return step,
    };
    if view.is_ready_member(&cluster.member_id)
        && let Some(pod) = pod_of(&cluster.member_id)
    {
        return HolderStep::FollowJoc(pod);
    }
    HolderStep::Wait(
        "without a cluster license JOC does not fail over and joc-ha writes no switch request; waiting for JOC's own active member",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, age: i64, api: bool) -> InstanceRow {
        InstanceRow {
            member_id: id.to_owned(),
            heart_beat_age_s: age,
            api_server: api,
            stamp: InstanceStamp::default(),
        }
    }

    fn view(active: Option<&str>, switch: Option<(&str, i64)>) -> JocView {
        JocView::new(
            active.map(|id| ClusterRow {
                member_id: id.to_owned(),
                heart_beat_age_s: 0,
                switch_member_id: switch.map(|(s, _)| s.to_owned()),
                switch_heart_beat_age_s: switch.map(|(_, age)| age),
            }),
            vec![
                instance("a:1", 0, false),
                instance("b:1", 1, false),
                instance("c:1", 9, false),
                instance("api:1", 0, true),
            ],
            Duration::from_secs(5),
        )
    }

    fn pod(id: &str) -> Option<String> {
        Some(super::super::hostname_of(id).to_owned())
    }

    #[test]
    fn readiness_needs_a_fresh_heartbeat_and_no_api_server() {
        let v = view(Some("a:1"), None);
        assert!(v.is_ready_member("a:1"));
        assert!(v.is_ready_member("b:1"));
        assert!(!v.is_ready_member("c:1"), "9 s > 5 s is exceeded");
        assert!(!v.is_ready_member("api:1"), "API servers never take part");
        assert!(!v.is_ready_member("unknown:1"));
        assert!(v.is_api_server("api:1"));
        let mut edge = view(None, None);
        edge.instances = vec![instance("e:1", 5, false)];
        assert!(
            edge.is_ready_member("e:1"),
            "JOC's rule is strictly greater"
        );
    }

    #[test]
    fn the_holder_is_confirmed_only_when_joc_runs_it() {
        assert_eq!(
            holder_step(&view(Some("a:1"), None), "a:1", None, pod),
            HolderStep::Confirmed
        );
        // JOC executed our switch request: MEMBER_ID is ours.
        assert_eq!(
            holder_step(&view(Some("a:1"), Some(("a:1", 0))), "a:1", None, pod),
            HolderStep::Confirmed
        );
        assert_eq!(
            holder_step(&view(Some("b:1"), None), "a:1", None, pod),
            HolderStep::RequestSwitch
        );
        // A pending switch away from us: JOC still runs us until it executes.
        assert_eq!(
            holder_step(&view(Some("a:1"), Some(("b:1", 0))), "a:1", None, pod),
            HolderStep::Confirmed
        );
        assert!(matches!(
            holder_step(&view(None, None), "a:1", Some("a:1"), pod),
            HolderStep::Wait(_)
        ));
    }

    #[test]
    fn a_new_holder_asks_joc_to_switch_once() {
        let v = view(Some("a:1"), None);
        assert_eq!(
            holder_step(&v, "b:1", Some("a:1"), pod),
            HolderStep::RequestSwitch
        );
        assert_eq!(holder_step(&v, "b:1", None, pod), HolderStep::RequestSwitch);
        let asked = view(Some("a:1"), Some(("b:1", 1)));
        assert!(matches!(
            holder_step(&asked, "b:1", Some("a:1"), pod),
            HolderStep::Wait(_)
        ));
        // JOC ignores a request whose heartbeat is exceeded: ask again.
        let stale = view(Some("a:1"), Some(("b:1", 6)));
        assert_eq!(
            holder_step(&stale, "b:1", Some("a:1"), pod),
            HolderStep::RequestSwitch
        );
    }

    #[test]
    fn the_lease_follows_joc_when_it_moved_by_itself_to_a_ready_member() {
        let v = view(Some("b:1"), None);
        assert_eq!(
            holder_step(&v, "a:1", Some("a:1"), pod),
            HolderStep::FollowJoc("b".into())
        );
        // Not moved since the last look: ask JOC instead.
        assert_eq!(
            holder_step(&v, "a:1", Some("b:1"), pod),
            HolderStep::RequestSwitch
        );
        // Moved to a member that may not hold the lease: ask JOC back.
        let to_stale = view(Some("c:1"), None);
        assert_eq!(
            holder_step(&to_stale, "a:1", Some("a:1"), pod),
            HolderStep::RequestSwitch
        );
        assert_eq!(
            holder_step(&v, "a:1", Some("a:1"), |_| None),
            HolderStep::RequestSwitch
        );
        // Moved while our own request is pending: it is on its way to us.
        let pending = view(Some("b:1"), Some(("a:1", 0)));
        assert!(matches!(
            holder_step(&pending, "a:1", Some("c:1"), pod),
            HolderStep::Wait(_)
        ));
    }

    #[test]
    fn left_over_switch_requests_are_cleared_and_live_ones_left() {
        let care = |v: &JocView, me| stale_switch_request(v, me, 1).map(|s| s.switch_member_id);
        // None pending.
        assert_eq!(care(&view(Some("a:1"), None), "a:1"), None);
        // Our own request, fresh: JOC executes it at its next poll.
        assert_eq!(care(&view(Some("a:1"), Some(("b:1", 1))), "b:1"), None);
        // Our own request, older than two polls but not exceeded: the
        // active JOC is slow or hung, and the pending request makes exactly
        // our JOC take over once its heartbeat is exceeded: kept.
        assert_eq!(care(&view(Some("a:1"), Some(("b:1", 4))), "b:1"), None);
        // Exceeded: JOC skips it for good (fact 13).
        assert_eq!(
            care(&view(Some("a:1"), Some(("b:1", 6))), "b:1").as_deref(),
            Some("b:1")
        );
        // An API server as target (fact 14), however fresh.
        assert_eq!(
            care(&view(Some("a:1"), Some(("api:1", 0))), "a:1").as_deref(),
            Some("api:1")
        );
        // Executed already (MEMBER_ID is the target) yet not cleared.
        assert_eq!(
            care(&view(Some("b:1"), Some(("b:1", 3))), "b:1").as_deref(),
            Some("b:1")
        );
        assert_eq!(care(&view(Some("b:1"), Some(("b:1", 1))), "b:1"), None);
        // For a member that does not hold the lease (a hand-over that
        // failed, a user's request): cleared after two polls.
        assert_eq!(care(&view(Some("a:1"), Some(("b:1", 1))), "a:1"), None);
        assert_eq!(
            care(&view(Some("a:1"), Some(("b:1", 3))), "a:1").as_deref(),
            Some("b:1")
        );
        // No SWITCH_HEART_BEAT at all: JOC never executes it.
        let mut no_beat = view(Some("a:1"), Some(("b:1", 0)));
        if let Some(c) = no_beat.cluster.as_mut() {
            c.switch_heart_beat_age_s = None;
        }
        assert_eq!(care(&no_beat, "b:1").as_deref(), Some("b:1"));
    }

    #[test]
    fn without_a_license_the_lease_follows_joc_and_never_asks_it_to_switch() {
        assert_eq!(
            unlicensed_holder_step(&view(Some("a:1"), None), "a:1", pod),
            HolderStep::Confirmed
        );
        assert_eq!(
            unlicensed_holder_step(&view(Some("b:1"), None), "a:1", pod),
            HolderStep::FollowJoc("b".into())
        );
        // JOC's active member is gone: without a license nobody fails over.
        assert!(matches!(
            unlicensed_holder_step(&view(Some("c:1"), None), "a:1", pod),
            HolderStep::Wait(_)
        ));
        assert!(matches!(
            unlicensed_holder_step(&view(None, None), "a:1", pod),
            HolderStep::Wait(_)
        ));
        for v in [
            view(Some("b:1"), None),
            view(Some("c:1"), None),
            view(None, None),
        ] {
            assert_ne!(
                unlicensed_holder_step(&v, "a:1", pod),
                HolderStep::RequestSwitch
            );
        }
    }

    /// (container run, JOC's row, healthy?)
    type Look = (JocRun, JocView, bool);

    /// This member's row, written by JOC at `started` / `beat`, `age` old.
    fn own_row(started: &str, beat: &str, age: i64) -> JocView {
        JocView::new(
            None,
            vec![InstanceRow {
                member_id: "a:1".to_owned(),
                heart_beat_age_s: age,
                api_server: false,
                stamp: InstanceStamp {
                    started_at: Some(started.to_owned()),
                    heart_beat: Some(beat.to_owned()),
                },
            }],
            Duration::from_secs(5),
        )
    }

    #[test]
    fn only_a_heartbeat_of_the_joc_process_now_running_counts() {
        use JocRun::{Running, Stopped, Unknown};
        let run = |id: &str| Running(id.to_owned());
        let no_row = JocView::new(None, vec![], Duration::from_secs(5));
        // (story, [(container run, JOC's row, healthy?)], one look after another)
        let cases: Vec<(&str, Vec<Look>)> = vec![
            (
                "crash and restart with the old heartbeat still fresh",
                vec![
                    (run("0@t0"), own_row("t0", "b1", 0), false),
                    (run("0@t0"), own_row("t0", "b2", 0), true),
                    (Stopped, own_row("t0", "b2", 1), false),
                    (run("1@t9"), own_row("t0", "b2", 2), false),
                    (run("1@t9"), own_row("t0", "b2", 4), false),
                    (run("1@t9"), own_row("t9", "b9", 0), true),
                ],
            ),
            (
                "the kubelet reports the restart without a stopped state in between",
                vec![
                    (run("0@t0"), own_row("t0", "b1", 0), false),
                    (run("0@t0"), own_row("t0", "b2", 0), true),
                    (run("1@t9"), own_row("t0", "b2", 1), false),
                    (run("1@t9"), own_row("t9", "b9", 0), true),
                ],
            ),
            (
                "sidecar restart with JOC running on: one poll later",
                vec![
                    (run("0@t0"), own_row("t0", "b7", 0), false),
                    (run("0@t0"), own_row("t0", "b8", 0), true),
                    (run("0@t0"), own_row("t0", "b9", 1), true),
                ],
            ),
            (
                "the own pod not seen yet: the sidecar's start stands in",
                vec![
                    (Unknown, own_row("t0", "b7", 0), false),
                    (Unknown, own_row("t0", "b8", 0), true),
                ],
            ),
            (
                "a JOC that never heartbeats",
                vec![
                    (run("0@t0"), no_row.clone(), false),
                    (run("0@t0"), no_row.clone(), false),
                    (run("0@t0"), no_row.clone(), false),
                ],
            ),
            (
                "a JOC that never heartbeats, under an old row going stale",
                vec![
                    (run("1@t9"), own_row("t0", "b2", 3), false),
                    (run("1@t9"), own_row("t0", "b2", 5), false),
                    (run("1@t9"), own_row("t0", "b2", 60), false),
                ],
            ),
            (
                "the first row of a fresh install",
                vec![
                    (run("0@t0"), no_row.clone(), false),
                    (run("0@t0"), own_row("t0", "b1", 0), true),
                ],
            ),
            (
                "JOC restarted twice quickly: the first restart's row does not count for the second",
                vec![
                    (run("0@t0"), own_row("t0", "b1", 0), false),
                    (run("0@t0"), own_row("t0", "b2", 0), true),
                    (run("1@t5"), own_row("t0", "b2", 1), false),
                    (run("1@t5"), own_row("t5", "b5", 0), true),
                    (run("2@t6"), own_row("t5", "b5", 1), false),
                    (run("2@t6"), own_row("t5", "b5", 2), false),
                    (run("2@t6"), own_row("t6", "b6", 0), true),
                ],
            ),
            (
                "proven, then hung: the heartbeat goes stale",
                vec![
                    (run("0@t0"), own_row("t0", "b1", 0), false),
                    (run("0@t0"), own_row("t0", "b2", 0), true),
                    (run("0@t0"), own_row("t0", "b2", 6), false),
                    (run("0@t0"), own_row("t0", "b3", 0), true),
                ],
            ),
            (
                "a clean shutdown's reset heartbeat (fact 12) is a change, but not fresh",
                vec![
                    (run("0@t0"), own_row("t0", "b1", 0), false),
                    (run("0@t0"), own_row("t0", "1970", 1_700_000_000), false),
                ],
            ),
        ];
        for (story, looks) in cases {
            let mut baseline = None;
            for (n, (run, view, healthy)) in looks.into_iter().enumerate() {
                let (got, next) = own_health(baseline.as_ref(), &run, &view, "a:1");
                assert_eq!(got, healthy, "{story}: look {n}");
                baseline = next;
            }
        }
    }
}
