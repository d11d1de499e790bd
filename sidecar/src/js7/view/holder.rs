//! What the lease holder does about JOC: label, ask JOC to switch, follow
//! JOC, or clear a switch request JOC would never execute or clear.

use super::{ClusterRow, InstanceRow, JocView};

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
    /// JOC runs this member, but its cluster heartbeat has gone silent
    /// (late, not yet exceeded): ask JOC to switch to `member_id` and hand
    /// the lease to `pod` before JOC's standbys race for the row.
    HandOn {
        pod: String,
        member_id: String,
        /// The silent heartbeat's age, for the log.
        age_s: i64,
    },
}

/// The holder's decision. `previous_active` is JOC's active member at the
/// sidecar's previous look (None when unknown); `pod_of` maps a ready
/// member id to its pod if that pod is a lease member that may receive it.
pub fn holder_step(
    view: &JocView,
    me: &str,
    previous_active: Option<&str>,
    polling_interval_s: i64,
    pod_of: impl Fn(&str) -> Option<String>,
) -> HolderStep {
    if let Some(step) = hand_on_if_silent(view, me, polling_interval_s, &pod_of) {
        return step;
    }
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

/// JOC's active member is this one and its `JOC_CLUSTER` heartbeat is
/// late: older than two polls before JOC's heartbeat timeout, not yet
/// exceeded. Once it is exceeded, every standby that reads the row before
/// another's write lands takes over and starts services: the row has no
/// version (`DBItemJocCluster.java`, its `@Version` commented out), so two
/// JOCs can run services at once. A standby that finds a switch request to
/// a member whose instance heartbeats waits instead ("wait for
/// switchMember", `JocCluster.java` `handleCurrentMemberOnProcess`), and the
/// target takes over alone: so the holder names its successor while there
/// is time. The successor's instance must have written within two polls
/// (proof that the database takes writes while this JOC is silent: after a
/// database outage every heartbeat is equally old and nothing is handed
/// on); a pending target is kept, else the freshest, then by id.
fn hand_on_if_silent(
    view: &JocView,
    me: &str,
    polling_interval_s: i64,
    pod_of: &impl Fn(&str) -> Option<String>,
) -> Option<HolderStep> {
    let cluster = view.cluster.as_ref().filter(|c| c.member_id == me)?;
    let poll = polling_interval_s.max(1);
    let late_after = view.silent_after_s(poll);
    let age = cluster.heart_beat_age_s;
    if age <= late_after || view.exceeded(age) {
        return None;
    }
    let mut lively: Vec<(&InstanceRow, String)> = view
        .instances
        .iter()
        .filter(|i| !i.api_server && i.member_id != me && i.heart_beat_age_s <= 2 * poll)
        .filter_map(|i| pod_of(&i.member_id).map(|pod| (i, pod)))
        .collect();
    lively.sort_by(|(a, _), (b, _)| {
        let not_pending =
            |i: &InstanceRow| cluster.switch_member_id.as_deref() != Some(&i.member_id);
        (not_pending(a), a.heart_beat_age_s, &a.member_id).cmp(&(
            not_pending(b),
            b.heart_beat_age_s,
            &b.member_id,
        ))
    });
    let (successor, pod) = lively.into_iter().next()?;
    Some(HolderStep::HandOn {
        pod,
        member_id: successor.member_id.clone(),
        age_s: age,
    })
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
    follow_jocs_active_member(
        view,
        me,
        pod_of,
        |member| view.is_ready_member(member),
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
    follow_jocs_active_member(
        view,
        me,
        pod_of,
        |member| view.is_waiting_active(member),
        "JOC waits for its first Controller (register one in JOC's GUI); the lease follows JOC's own active member",
    )
}

/// A holder that writes no switch request: done when JOC runs this member,
/// else the lease goes to JOC's active member once `alive` says it may
/// take it, else wait (`why`).
fn follow_jocs_active_member(
    view: &JocView,
    me: &str,
    pod_of: impl Fn(&str) -> Option<String>,
    alive: impl Fn(&str) -> bool,
    why: &'static str,
) -> HolderStep {
    let cluster = match settled(view, me) {
        Ok(cluster) => cluster,
        Err(step) => return step,
    };
    if alive(&cluster.member_id)
        && let Some(pod) = pod_of(&cluster.member_id)
    {
        return HolderStep::FollowJoc(pod);
    }
    HolderStep::Wait(why)
}
