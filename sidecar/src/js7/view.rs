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
    /// `SECURITY_LEVEL` as JOC wrote it (`LOW`, `MEDIUM`, `HIGH`).
    pub security_level: Option<String>,
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
    /// Registered Controllers (`INV_JS_INSTANCES`) per security level
    /// number, if counted.
    pub controllers: Option<Vec<(i64, i64)>>,
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
            controllers: None,
        }
    }

    /// With the Controllers counted per security level number.
    pub fn with_controllers(mut self, per_level: Vec<(i64, i64)>) -> JocView {
        self.controllers = Some(per_level);
        self
    }

    /// docs/joc-facts.md fact 9 (JocCluster.java `readCurrentDbInfos`): no
    /// Controller of `member_id`'s security level is registered yet, so
    /// that JOC, once active, blocks in the start of its services and
    /// writes no heartbeat at all until the user registers one in its GUI.
    /// False when not counted or the level is unknown.
    pub fn waits_for_controller(&self, member_id: &str) -> bool {
        let Some(per_level) = &self.controllers else {
            return false;
        };
        let Some(level) = self
            .instance(member_id)
            .and_then(|i| i.security_level.as_deref())
            .and_then(security_level_number)
        else {
            return false;
        };
        !per_level.iter().any(|&(l, n)| l == level && n > 0)
    }

    /// JOC's active member is `member_id`, waiting for its first
    /// Controller, and its cluster heartbeat is fresh: kept by its sidecar
    /// ([`keeps_waiting_heart_beat`]), which JOC's other instances take,
    /// as they would JOC's own, for an active member alive.
    pub fn is_waiting_active(&self, member_id: &str) -> bool {
        self.confirms(member_id)
            && self.waits_for_controller(member_id)
            && self
                .cluster
                .as_ref()
                .is_some_and(|c| !self.exceeded(c.heart_beat_age_s))
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

/// `JocSecurityLevel`'s number (INV_JS_INSTANCES) for the name JOC writes
/// into JOC_INSTANCES: LOW 0, MEDIUM 1, HIGH 2.
pub fn security_level_number(name: &str) -> Option<i64> {
    match name.to_ascii_uppercase().as_str() {
        "LOW" => Some(0),
        "MEDIUM" => Some(1),
        "HIGH" => Some(2),
        _ => None,
    }
}

/// Whether this member's sidecar writes JOC's cluster heartbeat for its
/// JOC now (docs/joc-facts.md fact 9). The active JOC of a fresh install
/// blocks in the start of its services until a Controller is registered
/// and writes no heartbeat meanwhile; JOC's other instances would then take
/// over one after another and block the same way, and when the user
/// registers the Controller every blocked one starts services at once.
/// So while its JOC is active and waits — and, once a Controller is there,
/// until that JOC writes its own heartbeat again, for at most `grace` —
/// the sidecar keeps the heartbeat, and no other JOC takes over. The
/// container running is required; a JVM dead inside it is restarted by the
/// liveness probe and comes back as this same active member.
pub fn keeps_waiting_heart_beat(
    view: &JocView,
    me: &str,
    run: &JocRun,
    kept_until_controller: Option<Duration>,
    own_fresh: bool,
    grace: Duration,
) -> bool {
    if !view.confirms(me) || !matches!(run, JocRun::Running(_)) {
        return false;
    }
    if view.waits_for_controller(me) {
        return true;
    }
    kept_until_controller.is_some_and(|since| since <= grace) && !own_fresh
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

/// The holder's decision while JOC waits for its first Controller
/// (docs/joc-facts.md fact 9): JOC's active member is blocked in the start
/// of its services and executes no switch request, so the holder writes
/// none; the lease follows JOC's active member, whose heartbeat its sidecar
/// keeps, and only that JOC carries the label: the one GUI the user
/// reaches to register the Controller.
pub fn waiting_holder_step(
    view: &JocView,
    me: &str,
    pod_of: impl Fn(&str) -> Option<String>,
) -> HolderStep {
    let cluster = match settled(view, me) {
        Ok(cluster) => cluster,
        Err(step) => return step,
    };
    if view.is_waiting_active(&cluster.member_id)
        && let Some(pod) = pod_of(&cluster.member_id)
    {
        return HolderStep::FollowJoc(pod);
    }
    HolderStep::Wait(
        "JOC waits for its first Controller (register one in JOC's GUI); the lease follows JOC's own active member",
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
            security_level: Some("LOW".to_owned()),
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
                security_level: None,
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

    /// A fresh install, JOC's active member `a:1` (its own heartbeat 9 s
    /// old, JOC_CLUSTER's `cluster_age` old), Controllers as given.
    fn waiting(cluster_age: i64, controllers: Vec<(i64, i64)>) -> JocView {
        let mut v = view(Some("a:1"), None).with_controllers(controllers);
        if let Some(c) = &mut v.cluster {
            c.heart_beat_age_s = cluster_age;
        }
        v.instances[0].heart_beat_age_s = 9;
        v
    }

    #[test]
    fn a_fresh_install_waits_for_a_controller_of_jocs_own_security_level() {
        let rows: Vec<(&str, JocView, bool)> = vec![
            ("not counted", view(Some("a:1"), None), false),
            ("none registered", waiting(0, vec![]), true),
            ("one of JOC's level", waiting(0, vec![(0, 1)]), false),
            ("only of another level", waiting(0, vec![(2, 3)]), true),
            (
                "JOC's level registered, none left",
                waiting(0, vec![(0, 0)]),
                true,
            ),
        ];
        for (case, v, waits) in rows {
            assert_eq!(v.waits_for_controller("a:1"), waits, "{case}");
        }
        let mut unknown = waiting(0, vec![]);
        unknown.instances[0].security_level = Some("SUPER".to_owned());
        assert!(!unknown.waits_for_controller("a:1"), "an unknown level");
        assert_eq!(security_level_number("medium"), Some(1));
        // Others see the waiting active member alive by its kept heartbeat.
        assert!(waiting(1, vec![]).is_waiting_active("a:1"));
        assert!(!waiting(6, vec![]).is_waiting_active("a:1"), "not kept");
        assert!(!waiting(1, vec![]).is_waiting_active("b:1"), "not active");
        assert!(!waiting(1, vec![(0, 1)]).is_waiting_active("a:1"));
    }

    #[test]
    fn the_sidecar_keeps_the_heartbeat_of_its_waiting_joc_and_no_longer() {
        let running = JocRun::Running("0@t0".to_owned());
        let grace = Duration::from_secs(62);
        let s = |secs: u64| Some(Duration::from_secs(secs));
        // (case, view, me, run, since the Controller, own heartbeat fresh, keep)
        type Row<'a> = (
            &'a str,
            JocView,
            &'a str,
            JocRun,
            Option<Duration>,
            bool,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "active, waiting",
                waiting(9, vec![]),
                "a:1",
                running.clone(),
                None,
                false,
                true,
            ),
            (
                "a standby never",
                waiting(9, vec![]),
                "b:1",
                running.clone(),
                None,
                true,
                false,
            ),
            (
                "container not running",
                waiting(9, vec![]),
                "a:1",
                JocRun::Stopped,
                None,
                false,
                false,
            ),
            (
                "run unknown",
                waiting(9, vec![]),
                "a:1",
                JocRun::Unknown,
                None,
                false,
                false,
            ),
            (
                "Controller there, JOC not awake yet",
                waiting(9, vec![(0, 1)]),
                "a:1",
                running.clone(),
                s(30),
                false,
                true,
            ),
            (
                "Controller there, JOC heartbeats itself",
                waiting(9, vec![(0, 1)]),
                "a:1",
                running.clone(),
                s(3),
                true,
                false,
            ),
            (
                "Controller there, JOC did not wake within the grace",
                waiting(9, vec![(0, 1)]),
                "a:1",
                running.clone(),
                s(63),
                false,
                false,
            ),
            (
                "Controller there, never kept",
                waiting(9, vec![(0, 1)]),
                "a:1",
                running.clone(),
                None,
                false,
                false,
            ),
            (
                "no longer JOC's active member",
                view(Some("b:1"), None).with_controllers(vec![]),
                "a:1",
                running.clone(),
                None,
                false,
                false,
            ),
        ];
        for (case, v, me, run, since, fresh, keep) in rows {
            assert_eq!(
                keeps_waiting_heart_beat(&v, me, &run, since, fresh, grace),
                keep,
                "{case}"
            );
        }
    }

    #[test]
    fn while_joc_waits_for_a_controller_the_lease_follows_its_active_member() {
        let pod = |id: &str| Some(crate::js7::hostname_of(id).to_owned());
        let no_pod = |_: &str| None;
        let rows: Vec<(&str, JocView, &str, HolderStep)> = vec![
            (
                "the holder is JOC's active member",
                waiting(1, vec![]),
                "a:1",
                HolderStep::Confirmed,
            ),
            (
                "another member is, its heartbeat kept",
                waiting(1, vec![]),
                "b:1",
                HolderStep::FollowJoc("a".to_owned()),
            ),
            (
                "another member is, its heartbeat not kept (yet)",
                waiting(9, vec![]),
                "b:1",
                HolderStep::Wait(""),
            ),
        ];
        for (case, v, me, expected) in rows {
            let step = waiting_holder_step(&v, me, pod);
            match expected {
                HolderStep::Wait(_) => {
                    assert!(matches!(step, HolderStep::Wait(_)), "{case}: {step:?}")
                }
                expected => assert_eq!(step, expected, "{case}"),
            }
            // Never a switch request: the waiting JOC would not execute it.
            assert_ne!(step, HolderStep::RequestSwitch, "{case}");
        }
        assert!(
            matches!(
                waiting_holder_step(&waiting(1, vec![]), "b:1", no_pod),
                HolderStep::Wait(_)
            ),
            "not a lease member"
        );
    }
}
