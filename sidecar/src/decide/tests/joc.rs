//! js7 mode: readiness, the holder's step, following JOC.

use super::*;
use crate::js7::JocRun;

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
fn waiting(previous: Option<&str>, previous_term: Option<i64>) -> State {
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
        own.joc_run = JocRun::Running("1@t9".to_owned());
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
        own.joc_run = JocRun::Stopped;
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

/// The kubelet's report of a new run of JOC's container is an input: the
/// sidecar looks at JOC at once and drops readiness, not at the next tick.
#[test]
fn a_reported_joc_restart_drops_readiness_at_once() {
    let cases: Vec<(&str, JocRun, Vec<&str>, Option<bool>)> = vec![
        (
            "same run: nothing to look at",
            own_pod().joc_run,
            vec![],
            Some(true),
        ),
        (
            "restarted",
            JocRun::Running("1@t9".to_owned()),
            vec!["read-joc", "joc-health:false", "ready:false"],
            Some(false),
        ),
        (
            "stopped",
            JocRun::Stopped,
            vec!["read-joc", "joc-health:false", "ready:false"],
            Some(false),
        ),
    ];
    for (name, run, expect, ready) in cases {
        let now = Instant::now();
        let mut f = facts(now, Role::Standby, Some("standby"), true);
        if let Some(own) = &mut f.own {
            own.joc_run = run;
        }
        let answers = Answers {
            joc: Ok(view(Some("joc-1"), None)),
            ..Answers::default()
        };
        let (after, actions) = drive(&standby(true), &mut f, Event::PodsChanged, &answers);
        let looked: Vec<String> = brief(&actions)
            .into_iter()
            .filter(|a| {
                a.starts_with("read-joc") || a.starts_with("joc-health") || a.starts_with("ready")
            })
            .collect();
        assert_eq!(looked, expect, "{name}");
        assert_eq!(after.joc.and_then(|j| j.ready), ready, "{name}");
    }
}

/// docs/joc-facts.md fact 9: on a fresh install JOC's active member writes
/// no heartbeat; its sidecar keeps JOC's cluster heartbeat, counts it ready
/// and does not fence it, although it was active and its row went stale.
#[test]
fn joc_waiting_for_its_first_controller_is_kept_alive_not_fenced() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let mut waiting = view(Some(ME), None).with_controllers(vec![]);
    for i in &mut waiting.instances {
        if i.member_id == id(ME) {
            i.heart_beat_age_s = 30;
        }
    }
    if let Some(c) = &mut waiting.cluster {
        c.heart_beat_age_s = 4;
    }
    let mut state = standby(true);
    if let Some(joc) = &mut state.joc {
        joc.was_active = true;
    }
    let answers = Answers {
        joc: Ok(waiting.clone()),
        ..Answers::default()
    };
    let (after, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert!(!b.contains(&"fence".to_owned()), "{b:?}");
    assert_eq!(
        &b[..3],
        ["read-joc", "keep-joc-heartbeat", "joc-health:true"],
        "{b:?}"
    );
    assert!(after.joc.as_ref().is_some_and(|j| j.keeping_waiting));
    // The Controller is registered: kept on until JOC heartbeats itself.
    let registered = waiting.clone().with_controllers(vec![(0, 1)]);
    let answers = Answers {
        joc: Ok(registered),
        ..Answers::default()
    };
    let (after, actions) = drive(&after, &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert!(b.contains(&"keep-joc-heartbeat".to_owned()), "{b:?}");
    assert!(!b.contains(&"fence".to_owned()), "{b:?}");
    // JOC woke and wrote its own heartbeat (the row changed): no more.
    let awake = view(Some(ME), None).with_controllers(vec![(0, 1)]);
    let answers = Answers {
        joc: Ok(awake),
        ..Answers::default()
    };
    let (after, actions) = drive(&after, &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert!(!b.contains(&"keep-joc-heartbeat".to_owned()), "{b:?}");
    assert!(b.contains(&"joc-health:true".to_owned()), "{b:?}");
    assert!(after.joc.as_ref().is_some_and(|j| !j.keeping_waiting));
}

/// The same JOC a standby: not kept (it heartbeats itself), and a member
/// that was active and lost `MEMBER_ID` while blocked is still fenced (it
/// would start services when the Controller appears, fact 9).
#[test]
fn a_former_active_joc_blocked_on_a_fresh_install_is_fenced() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let mut moved = view(Some("joc-1"), None).with_controllers(vec![]);
    for i in &mut moved.instances {
        if i.member_id == id(ME) {
            i.heart_beat_age_s = 30;
        }
    }
    let mut state = standby(true);
    if let Some(joc) = &mut state.joc {
        joc.was_active = true;
    }
    let answers = Answers {
        joc: Ok(moved),
        ..Answers::default()
    };
    let (_, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert_eq!(&b[..2], ["read-joc", "fence"], "{b:?}");
    assert!(!b.contains(&"keep-joc-heartbeat".to_owned()), "{b:?}");
}

/// Beyond JOC: Kubernetes reports the container of JOC's active member run
/// anew (every process of the old run gone), so the holder releases JOC's
/// cluster row at once instead of waiting out JOC's heartbeat timeout;
/// seen as a standby first, it is done once this member holds the lease.
#[test]
fn the_holder_releases_the_row_of_an_active_joc_whose_container_ran_anew() {
    let now = Instant::now();
    let restarted = |f: &mut Facts, run: &str| {
        for p in &mut f.pods {
            if p.name == "joc-1" {
                p.joc_run = JocRun::Running(run.to_owned());
            }
        }
    };
    let look = |state: &State, f: &mut Facts| {
        let answers = Answers {
            joc: Ok(view(Some("joc-1"), None)),
            ..Answers::default()
        };
        drive(state, f, Event::JocLook, &answers)
    };
    let releases = |actions: &[Action]| {
        brief(actions)
            .iter()
            .filter(|a| a.starts_with("release-gone"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // (case, the holder's role at the second look, run then, released)
    let cases = [
        ("the same run: nothing", true, "0@t0", vec![]),
        (
            "ran anew: released",
            true,
            "1@t9",
            vec!["release-gone:joc-1"],
        ),
        (
            "ran anew, but a standby: not its write",
            false,
            "1@t9",
            vec![],
        ),
    ];
    for (case, holds, run, expected) in cases {
        let role = |holds: bool| if holds { active(5, now) } else { Role::Standby };
        let mut f = facts(
            now,
            role(holds),
            Some(if holds { "active" } else { "standby" }),
            true,
        );
        let state = if holds {
            waiting(Some("joc-1"), Some(5))
        } else {
            standby(true)
        };
        let (state, first) = look(&state, &mut f);
        assert!(releases(&first).is_empty(), "{case}: first look");
        restarted(&mut f, run);
        let (state, second) = look(&state, &mut f);
        assert_eq!(releases(&second), expected, "{case}");
        if !holds && run != "0@t0" {
            // The lease comes to this member: it releases the row then.
            let mut f = facts(now, active(6, now), Some("active"), true);
            restarted(&mut f, run);
            let state = State {
                active_term: Some(6),
                ..state
            };
            let (_, third) = look(&state, &mut f);
            assert_eq!(
                releases(&third),
                ["release-gone:joc-1"],
                "{case}: as holder"
            );
        }
    }
}
