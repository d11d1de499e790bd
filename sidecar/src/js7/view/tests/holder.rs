//! The holder's step and the care of JOC's switch requests.

use super::*;

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
        holder_step(&view(Some("a:1"), None), "a:1", None, 1, pod),
        HolderStep::Confirmed
    );
    // JOC executed our switch request: MEMBER_ID is ours.
    assert_eq!(
        holder_step(&view(Some("a:1"), Some(("a:1", 0))), "a:1", None, 1, pod),
        HolderStep::Confirmed
    );
    assert_eq!(
        holder_step(&view(Some("b:1"), None), "a:1", None, 1, pod),
        HolderStep::RequestSwitch
    );
    // A pending switch away from us: JOC still runs us until it executes.
    assert_eq!(
        holder_step(&view(Some("a:1"), Some(("b:1", 0))), "a:1", None, 1, pod),
        HolderStep::Confirmed
    );
    assert!(matches!(
        holder_step(&view(None, None), "a:1", Some("a:1"), 1, pod),
        HolderStep::Wait(_)
    ));
}

#[test]
fn a_new_holder_asks_joc_to_switch_once() {
    let v = view(Some("a:1"), None);
    assert_eq!(
        holder_step(&v, "b:1", Some("a:1"), 1, pod),
        HolderStep::RequestSwitch
    );
    assert_eq!(
        holder_step(&v, "b:1", None, 1, pod),
        HolderStep::RequestSwitch
    );
    let asked = view(Some("a:1"), Some(("b:1", 1)));
    assert!(matches!(
        holder_step(&asked, "b:1", Some("a:1"), 1, pod),
        HolderStep::Wait(_)
    ));
    // JOC ignores a request whose heartbeat is exceeded: ask again.
    let stale = view(Some("a:1"), Some(("b:1", 6)));
    assert_eq!(
        holder_step(&stale, "b:1", Some("a:1"), 1, pod),
        HolderStep::RequestSwitch
    );
}

#[test]
fn the_lease_follows_joc_when_it_moved_by_itself_to_a_ready_member() {
    let v = view(Some("b:1"), None);
    assert_eq!(
        holder_step(&v, "a:1", Some("a:1"), 1, pod),
        HolderStep::FollowJoc("b".into())
    );
    // Not moved since the last look: ask JOC instead.
    assert_eq!(
        holder_step(&v, "a:1", Some("b:1"), 1, pod),
        HolderStep::RequestSwitch
    );
    // Moved to a member that may not hold the lease: ask JOC back.
    let to_stale = view(Some("c:1"), None);
    assert_eq!(
        holder_step(&to_stale, "a:1", Some("a:1"), 1, pod),
        HolderStep::RequestSwitch
    );
    assert_eq!(
        holder_step(&v, "a:1", Some("a:1"), 1, |_| None),
        HolderStep::RequestSwitch
    );
    // Moved while our own request is pending: it is on its way to us.
    let pending = view(Some("b:1"), Some(("a:1", 0)));
    assert!(matches!(
        holder_step(&pending, "a:1", Some("c:1"), 1, pod),
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

/// JOC's active member `a:1` with its cluster heartbeat `age` s old.
fn silent(age: i64) -> JocView {
    let mut v = view(Some("a:1"), None);
    if let Some(c) = &mut v.cluster {
        c.heart_beat_age_s = age;
    }
    v
}

fn handed_on(to: &str, age_s: i64) -> HolderStep {
    HolderStep::HandOn {
        pod: to.to_owned(),
        member_id: format!("{to}:1"),
        age_s,
    }
}

#[test]
fn a_silent_active_member_names_its_successor_before_the_timeout() {
    // Timeout 5 s, poll 1 s: late from 4 s (older than two polls before
    // the timeout), exceeded from 6 s.
    for (age, expected) in [
        (0, HolderStep::Confirmed),
        (3, HolderStep::Confirmed),
        (4, handed_on("b", 4)),
        (5, handed_on("b", 5)),
        // Exceeded: JOC's standbys race already; nothing to pre-empt.
        (6, HolderStep::Confirmed),
    ] {
        assert_eq!(
            holder_step(&silent(age), "a:1", Some("a:1"), 1, pod),
            expected,
            "cluster heartbeat {age} s old"
        );
    }
}

#[test]
fn a_successor_must_have_written_lately_and_be_a_member_pod() {
    // b:1 wrote 3 s ago (more than two polls): after a database outage
    // everyone is late alike; nothing is handed on.
    let mut v = silent(4);
    v.instances[1].heart_beat_age_s = 3;
    assert_eq!(
        holder_step(&v, "a:1", Some("a:1"), 1, pod),
        HolderStep::Confirmed
    );
    // No pod that may take the lease.
    assert_eq!(
        holder_step(&silent(4), "a:1", Some("a:1"), 1, |_| None),
        HolderStep::Confirmed
    );
    // A pending target is kept, although another member wrote later.
    let mut v = view(Some("a:1"), Some(("b:1", 0)));
    v.instances.push(instance("d:1", 0, false));
    if let Some(c) = &mut v.cluster {
        c.heart_beat_age_s = 4;
    }
    assert_eq!(holder_step(&v, "a:1", None, 1, pod), handed_on("b", 4));
    // Else the freshest.
    let mut v = silent(5);
    v.instances.push(instance("d:1", 0, false));
    assert_eq!(holder_step(&v, "a:1", None, 1, pod), handed_on("d", 5));
}

#[test]
fn only_the_silent_member_itself_hands_on_and_only_with_time_to_spare() {
    // JOC's active member is another one: the holder asks JOC as usual.
    assert_eq!(
        holder_step(&silent(4), "b:1", None, 1, pod),
        HolderStep::RequestSwitch
    );
    // A timeout of 2 s with a poll of 1 s leaves no late-but-not-exceeded
    // window: the rule never fires.
    for age in 0..=4 {
        let mut v = silent(age);
        v.exceeded_interval_s = 2;
        assert!(
            !matches!(
                holder_step(&v, "a:1", None, 1, pod),
                HolderStep::HandOn { .. }
            ),
            "age {age}"
        );
    }
}
