//! js7 mode: readiness, the holder's step, following JOC.

use super::*;
use crate::js7::ContainerRun;

fn look(state: &State, view: JocView, answers: Answers) -> (State, Vec<Action>) {
    let now = Instant::now();
    let mut f = facts(now, active(5, now), Some("standby"), false);
    let answers = Answers {
        joc: Ok(view),
        ..answers
    };
    drive(state, &mut f, Event::JocLook, &answers)
}

/// Holding term 5, waiting for JOC (not confirmed), JOC's last look at `previous`.
pub(super) fn waiting(previous: Option<&str>, previous_term: Option<i64>) -> State {
    let mut state = holding(true, 5);
    if let Some(joc) = &mut state.joc {
        joc.confirmed = false;
        joc.previous_active = previous.map(id);
        joc.previous_term = previous_term;
    }
    state
}

#[test]
fn a_new_js7_holder_holds_the_lease_but_its_label_waits_for_joc() {
    let now = Instant::now();
    let mut f = facts(now, active(5, now), Some("standby"), false);
    let answers = Answers {
        joc: Ok(view(Some("joc-1"), None)),
        ..Answers::default()
    };
    let (after, actions) = drive(&standby(true), &mut f, Event::LeaseChanged, &answers);
    assert_eq!(
        brief(&actions),
        [
            "list-pods",
            "publish:active:5",
            "read-joc",
            "joc-health:true",
            "joc-switch:joc-1->joc-0",
            "event:JocSwitchRequested"
        ]
    );
    assert_eq!(after.active_term, Some(5));
    assert!(after.waiting_for_joc());
}

/// JOC runs this member; its `JOC_CLUSTER` heartbeat is `age` s old.
fn silent_view(age: i64) -> JocView {
    let mut v = view(Some(ME), None);
    if let Some(c) = &mut v.cluster {
        c.heart_beat_age_s = age;
    }
    v
}

#[test]
fn every_holder_step_in_order() {
    let cases: Vec<(&str, State, JocView, Vec<&str>)> = vec![
        (
            "JOC confirms: label active",
            waiting(Some("joc-1"), Some(5)),
            view(Some(ME), None),
            vec![
                "read-joc",
                "joc-health:true",
                "label:joc-0:active:5",
                "event:BecameActive",
            ],
        ),
        (
            "already confirmed: nothing",
            holding(true, 5),
            view(Some(ME), None),
            vec!["read-joc", "joc-health:true"],
        ),
        (
            "JOC runs another member that did not move: ask JOC",
            waiting(Some("joc-1"), Some(5)),
            view(Some("joc-1"), None),
            vec![
                "read-joc",
                "joc-health:true",
                "joc-switch:joc-1->joc-0",
                "event:JocSwitchRequested",
            ],
        ),
        (
            "our request is pending: wait",
            waiting(Some("joc-1"), Some(5)),
            view(Some("joc-1"), Some(ME)),
            vec!["read-joc", "joc-health:true"],
        ),
        (
            "no active JOC member: wait",
            waiting(None, Some(5)),
            view(None, None),
            vec!["read-joc", "joc-health:true"],
        ),
        (
            "JOC moved away by itself during our term: follow, standby first",
            holding(true, 5),
            view(Some("joc-1"), None),
            vec![
                "read-joc",
                "joc-health:true",
                "publish:standby",
                "handover:joc-1",
                "event:LeaseFollowedJoc",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        ),
        (
            "JOC runs us but our JOC went silent: name a successor, fence, then hand on",
            holding(true, 5),
            silent_view(4),
            vec![
                "read-joc",
                "joc-health:true",
                "publish:standby",
                "joc-switch:joc-0->joc-1",
                // Again once the JVM is gone: the first one may have
                // waited in vain behind the hung JOC's row lock.
                "fence,then-joc-switch:joc-1",
                "event:JocFenced",
                "handover:joc-1",
                "event:HandedOnFromSilentJoc",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        ),
    ];
    for (name, state, view, expect) in cases {
        let (_, actions) = look(&state, view, Answers::default());
        assert_eq!(brief(&actions), expect, "{name}");
    }
}

#[test]
fn a_holder_joc_no_longer_runs_loses_its_label_when_following_fails() {
    let answers = Answers {
        hand_over: Some(Ok(HandOverOutcome::NoEligibleTarget {
            reason: "joc-1 not ready".into(),
        })),
        ..Answers::default()
    };
    let (after, actions) = look(&holding(true, 5), view(Some("joc-1"), None), answers);
    assert_eq!(
        brief(&actions),
        [
            "read-joc",
            "joc-health:true",
            "publish:standby",
            "handover:joc-1",
            "label:joc-0:standby"
        ]
    );
    assert_eq!(after.active_term, Some(5), "still the holder, unlabeled");
    assert!(after.waiting_for_joc());
}

/// Seen once in CI (js7_e2e on MariaDB): after a fail-over moved JOC's
/// active member, a switch-over's new holder read that move (made before
/// its term, while it was standby) as one JOC made by itself and handed
/// the lease back. The old logic compared only JOC's active member with the
/// previous look, whatever term that look was made in.
#[test]
fn a_joc_move_from_before_the_term_does_not_send_the_lease_back() {
    // At the last look (as standby) JOC ran joc-2; it then failed over to
    // joc-1; now this member holds term 5.
    let (after, actions) = look(
        &waiting(Some("joc-2"), None),
        view(Some("joc-1"), None),
        Answers::default(),
    );
    let brief = brief(&actions);
    assert_eq!(
        brief,
        [
            "read-joc",
            "joc-health:true",
            "joc-switch:joc-1->joc-0",
            "event:JocSwitchRequested"
        ]
    );
    assert!(
        !brief.iter().any(|a| a.starts_with("handover")),
        "{brief:?}"
    );
    assert_eq!(after.active_term, Some(5));
    // The same move seen during the term is JOC's own: the lease follows.
    let (_, actions) = look(
        &waiting(Some("joc-2"), Some(5)),
        view(Some("joc-1"), None),
        Answers::default(),
    );
    assert!(super::brief(&actions).contains(&"handover:joc-1".to_owned()));
}

/// Name, state, what JOC's tables say, the effects, the readiness after.
type ReadinessCase = (
    &'static str,
    State,
    Result<JocView, JocReadError>,
    Vec<&'static str>,
    Option<bool>,
);

#[test]
fn readiness_follows_this_members_joc_heartbeat() {
    let mut stale = view(Some("joc-1"), None);
    stale.instances[0].heart_beat_age_s = 60;
    let mut unknown = standby(true);
    if let Some(joc) = &mut unknown.joc {
        joc.ready = None;
    }
    let not_installed = Err(JocReadError {
        not_installed: true,
        message: "JOC's tables do not exist".into(),
    });
    let cases: Vec<ReadinessCase> = vec![
        (
            "fresh, first look",
            unknown.clone(),
            Ok(view(Some("joc-1"), None)),
            vec!["read-joc", "joc-health:true", "ready:true"],
            Some(true),
        ),
        (
            "fresh, unchanged",
            standby(true),
            Ok(view(Some("joc-1"), None)),
            vec!["read-joc", "joc-health:true"],
            Some(true),
        ),
        (
            "stale",
            standby(true),
            Ok(stale),
            vec!["read-joc", "joc-health:false", "ready:false"],
            Some(false),
        ),
        (
            "tables missing",
            standby(true),
            not_installed.clone(),
            vec!["read-joc", "joc-health:false", "ready:false"],
            Some(false),
        ),
        (
            "database error: nothing changes",
            standby(true),
            Err(JocReadError {
                not_installed: false,
                message: "timeout".into(),
            }),
            vec!["read-joc"],
            Some(true),
        ),
    ];
    for (name, state, joc, expect, ready) in cases {
        let now = Instant::now();
        let mut f = facts(now, Role::Standby, Some("standby"), true);
        let answers = Answers {
            joc,
            ..Answers::default()
        };
        let (after, actions) = drive(&state, &mut f, Event::LeaseChanged, &answers);
        assert_eq!(brief(&actions), expect, "{name}");
        assert_eq!(after.joc.and_then(|j| j.ready), ready, "{name}");
    }
    // A stepped-down member is never ready again.
    let mut down = standby(true);
    down.stepped_down = true;
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let (_, actions) = drive(&down, &mut f, Event::LeaseChanged, &Answers::default());
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:true", "ready:false"]
    );
}

/// docs/joc-facts.md fact 22: the restarted pod's sidecar counted the
/// previous JVM's still-fresh heartbeat as ready.
#[test]
fn a_restarted_jocs_old_heartbeat_does_not_make_the_member_ready() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let look = |state: &State, f: &mut Facts, joc: JocView| {
        let answers = Answers {
            joc: Ok(joc),
            ..Answers::default()
        };
        drive(state, f, Event::LeaseChanged, &answers)
    };
    // The same row (JOC's old heartbeat, 1 s old: fresh) at every look.
    let mut old = view(Some("joc-1"), None);
    old.instances[0].heart_beat_age_s = 1;
    old.instances[0].stamp.heart_beat = Some("old".to_owned());
    // The kubelet reports the `joc` container's new run.
    if let Some(own) = &mut f.own {
        own.joc_run = ContainerRun::Running("1@t9".to_owned());
    }
    let (state, actions) = look(&standby(true), &mut f, old.clone());
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:false", "ready:false"],
        "a new run: the row the old JVM wrote does not count"
    );
    let (state, actions) = look(&state, &mut f, old.clone());
    assert_eq!(brief(&actions), ["read-joc", "joc-health:false"]);
    // The new JVM heartbeats: the row changes.
    let (state, actions) = look(&state, &mut f, view(Some("joc-1"), None));
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:true", "ready:true"]
    );
    // The container stops: not ready, whatever the row says.
    if let Some(own) = &mut f.own {
        own.joc_run = ContainerRun::Stopped;
    }
    let (_, actions) = look(&state, &mut f, view(Some("joc-1"), None));
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:false", "ready:false"]
    );
    // A restarted sidecar (no baseline) with JOC running on: ready at the
    // next heartbeat, not at the first look.
    f.own = Some(own_pod());
    let mut fresh_sidecar = standby(true);
    if let Some(joc) = &mut fresh_sidecar.joc {
        joc.baseline = None;
        joc.ready = None;
    }
    let (state, actions) = look(&fresh_sidecar, &mut f, view(Some("joc-1"), None));
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:false", "ready:false"]
    );
    let (_, actions) = look(&state, &mut f, view(Some("joc-1"), None));
    assert_eq!(
        brief(&actions),
        ["read-joc", "joc-health:true", "ready:true"]
    );
}

#[test]
fn a_repeated_joc_note_is_logged_once() {
    let now = Instant::now();
    let error = Err(JocReadError {
        not_installed: false,
        message: "timeout".into(),
    });
    let answers = Answers {
        joc: error,
        ..Answers::default()
    };
    let logs = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Log(..)))
            .count()
    };
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let (once, actions) = drive(&standby(true), &mut f, Event::LeaseChanged, &answers);
    assert_eq!(logs(&actions), 1);
    let (_, actions) = drive(&once, &mut f, Event::LeaseChanged, &answers);
    assert_eq!(logs(&actions), 0);
}

/// Issue 14: without a cluster license a switch request leaves no member
/// running JOC's services (docs/joc-facts.md fact 10), so the holder never
/// writes one: it follows JOC's own active member instead, and a switch-over
/// hands the lease over without asking JOC.
#[test]
fn without_a_license_the_holder_never_asks_joc_to_switch() {
    let unlicensed = |mut state: State| {
        if let Some(joc) = &mut state.settings.joc {
            joc.licensed = false;
        }
        state
    };
    // A new holder, JOC runs joc-1 (which did not move): follow JOC.
    let (_, actions) = look(
        &unlicensed(waiting(Some("joc-1"), Some(5))),
        view(Some("joc-1"), None),
        Answers::default(),
    );
    let brief = brief(&actions);
    assert!(
        !brief.iter().any(|a| a.starts_with("joc-switch")),
        "{brief:?}"
    );
    assert!(brief.contains(&"handover:joc-1".to_owned()), "{brief:?}");
    // JOC runs nobody: wait, and still no request.
    let (_, actions) = look(
        &unlicensed(waiting(None, Some(5))),
        view(None, None),
        Answers::default(),
    );
    assert_eq!(super::brief(&actions), ["read-joc", "joc-health:true"]);
}

/// Issue 14 (docs/joc-facts.md facts 13, 14): JOC never clears a request it
/// skips, and executes one naming an API server; the holder takes such
/// requests away.
#[test]
fn the_holder_clears_left_over_switch_requests() {
    let with_request = |target: &str, age_s: i64, api_server: bool| {
        let mut v = view(Some(ME), None);
        if let Some(c) = v.cluster.as_mut() {
            c.switch_member_id = Some(id(target));
            c.switch_heart_beat_age_s = Some(age_s);
        }
        if api_server {
            v.instances.push(InstanceRow {
                member_id: id(target),
                heart_beat_age_s: 0,
                api_server: true,
                ..Default::default()
            });
        }
        v
    };
    let cases: Vec<(&str, JocView, bool)> = vec![
        (
            "exceeded: JOC skips it for good",
            with_request("joc-1", 9, false),
            true,
        ),
        (
            "an API server as target",
            with_request("joc-api-0", 0, true),
            true,
        ),
        (
            "not the holder's, older than two polls",
            with_request("joc-1", 3, false),
            true,
        ),
        (
            "fresh, during a hand-over: kept",
            with_request("joc-1", 1, false),
            false,
        ),
    ];
    for (story, v, cleared) in cases {
        let (_, actions) = look(&holding(true, 5), v, Answers::default());
        let brief = brief(&actions);
        assert_eq!(
            brief.iter().any(|a| a.starts_with("joc-clear:")),
            cleared,
            "{story}: {brief:?}"
        );
    }
    // A standby writes nothing to JOC's tables.
    let (_, actions) = look(
        &standby(true),
        with_request("joc-1", 9, false),
        Answers::default(),
    );
    assert!(
        !super::brief(&actions)
            .iter()
            .any(|a| a.starts_with("joc-clear:"))
    );
}
