//! js7 fencing as flows: when the sidecar SIGKILLs its JOC, in which order
//! with the lease, and what it remembers (the rule's table is in
//! `decide/fence.rs`).

use super::*;
use crate::js7::ContainerRun;

/// `view` with this member's instance heartbeat `age_s` seconds old.
fn own_age(mut view: JocView, age_s: i64) -> JocView {
    for i in &mut view.instances {
        if i.member_id == id(ME) {
            i.heart_beat_age_s = age_s;
        }
    }
    view
}

/// `view` with this member's row as a dead JVM left it (its text unchanged).
fn unwritten(mut view: JocView) -> JocView {
    for i in &mut view.instances {
        if i.member_id == id(ME) {
            i.stamp.heart_beat = Some("written by the dead JVM".to_owned());
        }
    }
    view
}

fn was_active(mut state: State) -> State {
    if let Some(joc) = &mut state.joc {
        joc.was_active = true;
    }
    state
}

#[test]
fn a_frozen_joc_in_a_live_pod_is_fenced_before_the_lease_follows_jocs_new_member() {
    // fact 20: JOC froze in its start as MEMBER_ID; another JOC took over.
    let now = Instant::now();
    let mut f = facts(now, active(5, now), Some("active"), false);
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        ..Answers::default()
    };
    let (after, actions) = drive(
        &was_active(holding(true, 5)),
        &mut f,
        Event::JocLook,
        &answers,
    );
    let b = brief(&actions);
    assert!(
        position(&actions, "publish:standby") < position(&actions, "fence"),
        "{b:?}"
    );
    assert!(
        position(&actions, "fence") < position(&actions, "handover:joc-1"),
        "{b:?}"
    );
    assert!(b.contains(&"event:JocFenced".to_owned()), "{b:?}");
    assert!(
        actions.contains(&Action::Metric(Metric::JocFenced("hung"))),
        "{actions:?}"
    );
    assert!(
        !after.joc.as_ref().is_some_and(|j| j.was_active),
        "forgotten after the fence"
    );
}

#[test]
fn the_holders_own_hung_joc_is_not_fenced_while_it_holds_the_lease() {
    let now = Instant::now();
    let mut f = facts(now, active(5, now), Some("active"), false);
    let answers = Answers {
        joc: Ok(own_age(view(Some(ME), None), 9)),
        ..Answers::default()
    };
    let (_, actions) = drive(
        &was_active(holding(true, 5)),
        &mut f,
        Event::JocLook,
        &answers,
    );
    assert!(
        !brief(&actions).contains(&"fence".to_owned()),
        "{:?}",
        brief(&actions)
    );
    // It gives up its readiness, so the lease moves on.
    assert!(
        brief(&actions).contains(&"ready:false".to_owned()),
        "{:?}",
        brief(&actions)
    );
}

#[test]
fn a_member_without_the_lease_fences_its_hung_former_active_joc_once() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        ..Answers::default()
    };
    let (after, actions) = drive(&was_active(standby(true)), &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert_eq!(&b[..2], ["read-joc", "fence"], "{b:?}");
    assert!(b.contains(&"event:JocFenced".to_owned()), "{b:?}");
    // The next look (its JVM restarting, still no heartbeat) fences nothing.
    let (_, again) = drive(&after, &mut f, Event::JocLook, &answers);
    assert!(
        !brief(&again).contains(&"fence".to_owned()),
        "{:?}",
        brief(&again)
    );
}

#[test]
fn a_standby_that_was_never_active_is_not_fenced_when_its_joc_hangs() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        ..Answers::default()
    };
    let (_, actions) = drive(&standby(true), &mut f, Event::JocLook, &answers);
    assert!(
        !brief(&actions).contains(&"fence".to_owned()),
        "{:?}",
        brief(&actions)
    );
}

#[test]
fn a_sidecar_resumed_from_a_freeze_without_the_lease_fences_before_it_reads_joc() {
    let now = Instant::now();
    let mut state = was_active(standby(true));
    if let Some(joc) = &mut state.joc {
        joc.last_look = Some(now - Duration::from_secs(20));
    }
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    // JOC thawed too: its heartbeat may look fresh at once.
    let answers = Answers {
        joc: Ok(view(Some(ME), None)),
        ..Answers::default()
    };
    let (_, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    let b = brief(&actions);
    assert_eq!(&b[..3], ["fence", "event:JocFenced", "read-joc"], "{b:?}");
    assert!(
        actions.contains(&Action::Metric(Metric::JocFenced("resumed_without_lease"))),
        "{actions:?}"
    );
}

#[test]
fn a_joc_active_without_the_lease_beyond_the_bound_is_fenced() {
    let start = Instant::now();
    let mut f = facts(start, Role::Standby, Some("standby"), true);
    let answers = Answers {
        joc: Ok(view(Some(ME), Some("joc-1"))),
        ..Answers::default()
    };
    // A switch to joc-1 is pending: within the bound (5 s + 2 polls) nothing.
    let (state, actions) = drive(&standby(true), &mut f, Event::JocLook, &answers);
    assert!(!brief(&actions).contains(&"fence".to_owned()));
    f.now = start + Duration::from_secs(4);
    let (state, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    assert!(!brief(&actions).contains(&"fence".to_owned()));
    f.now = start + Duration::from_secs(8);
    let (_, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    assert!(
        actions.contains(&Action::Metric(Metric::JocFenced("active_without_lease"))),
        "{:?}",
        brief(&actions)
    );
}

#[test]
fn a_failed_fence_says_so_once_and_keeps_trying() {
    let now = Instant::now();
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        fence: Err("EPERM".to_owned()),
        ..Answers::default()
    };
    let (after, actions) = drive(&was_active(standby(true)), &mut f, Event::JocLook, &answers);
    assert!(
        brief(&actions).contains(&"event:JocFenceFailed".to_owned()),
        "{:?}",
        brief(&actions)
    );
    assert!(
        after.joc.as_ref().is_some_and(|j| j.was_active),
        "still to fence"
    );
    let (_, again) = drive(&after, &mut f, Event::JocLook, &answers);
    let b = brief(&again);
    assert!(b.contains(&"fence".to_owned()), "{b:?}");
    assert!(
        !b.contains(&"event:JocFenceFailed".to_owned()),
        "said once: {b:?}"
    );
}

#[test]
fn fencing_off_fences_nothing() {
    let now = Instant::now();
    let mut state = was_active(standby(true));
    if let Some(joc) = &mut state.settings.joc {
        joc.fence = false;
    }
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        ..Answers::default()
    };
    let (_, actions) = drive(&state, &mut f, Event::JocLook, &answers);
    assert!(!brief(&actions).contains(&"fence".to_owned()));
}

/// docs/joc-facts.md fact 22: after a crash of the whole pod, the new
/// sidecar sees the dead JVM's row fresh and JOC_CLUSTER still naming this
/// member; it must not fence the new JVM that has not written yet.
#[test]
fn a_restarted_sidecar_does_not_fence_the_joc_starting_after_a_crash() {
    let start = Instant::now();
    let mut f = facts(start, Role::Standby, Some("standby"), true);
    // A restarted sidecar has seen nothing of this container run yet.
    let mut state = State::new(settings(true));
    // The dead JVM's heartbeat only ages: 2, 3, 4, 5 s, then exceeded.
    for (i, age) in [2, 3, 4, 5, 6, 7].into_iter().enumerate() {
        f.now = start + Duration::from_secs(i as u64);
        let answers = Answers {
            // Nobody writes the row: the same text at every look.
            joc: Ok(unwritten(own_age(view(Some(ME), None), age))),
            ..Answers::default()
        };
        let (after, actions) = drive(&state, &mut f, Event::JocLook, &answers);
        assert!(
            !brief(&actions).contains(&"fence".to_owned()),
            "age {age}: {:?}",
            brief(&actions)
        );
        state = after;
    }
    assert!(!state.joc.as_ref().is_some_and(|j| j.was_active));
}

/// A live JOC writes its heartbeat (its age goes down between looks): once
/// seen active that way and then hung without the lease, it is fenced.
#[test]
fn a_joc_seen_writing_as_active_and_then_hung_is_fenced() {
    let start = Instant::now();
    let mut f = facts(start, Role::Standby, Some("standby"), true);
    let mut state = standby(true);
    let mut fenced = false;
    for (i, (active, age)) in [(ME, 1), (ME, 0), ("joc-1", 1), ("joc-1", 6)]
        .into_iter()
        .enumerate()
    {
        f.now = start + Duration::from_secs(i as u64);
        let answers = Answers {
            joc: Ok(own_age(view(Some(active), None), age)),
            ..Answers::default()
        };
        let (after, actions) = drive(&state, &mut f, Event::JocLook, &answers);
        fenced |= brief(&actions).contains(&"fence".to_owned());
        state = after;
    }
    assert!(fenced);
}

/// `view` with this member's instance heartbeat written at `beat` (the
/// row's text as the database holds it), its age always 0 s.
fn own_beat(mut view: JocView, beat: u64) -> JocView {
    for i in &mut view.instances {
        if i.member_id == id(ME) {
            i.heart_beat_age_s = 0;
            i.stamp.heart_beat = Some(format!("2026-12-01 12:00:{beat:02}"));
        }
    }
    view
}

#[test]
fn a_joc_whose_heartbeat_age_never_moves_in_whole_seconds_is_still_fenced_when_it_hangs() {
    // Found by js7_e2e on MariaDB: JOC writes every second, the sidecar
    // looks every second, so the age reads 0 at every look and no "write
    // seen between two looks" ever proves a live JVM. The row's own change
    // since this container run began (fact 22) proves it instead.
    let start = Instant::now();
    let mut f = facts(start, Role::Standby, Some("standby"), true);
    let mut state = standby(true);
    let mut fenced = false;
    for (i, active) in [ME, ME, ME, "joc-1"].into_iter().enumerate() {
        f.now = start + Duration::from_secs(i as u64);
        let joc = if active == ME {
            own_beat(view(Some(ME), None), i as u64)
        } else {
            own_age(view(Some(active), None), 6)
        };
        let answers = Answers {
            joc: Ok(joc),
            ..Answers::default()
        };
        let (after, actions) = drive(&state, &mut f, Event::JocLook, &answers);
        fenced |= brief(&actions).contains(&"fence".to_owned());
        state = after;
    }
    assert!(fenced, "a hung former MEMBER_ID must be fenced");
}

/// fact 22: the active JOC's container was killed and the kubelet started
/// it anew; the new JVM does not heartbeat yet and the old one's row goes
/// stale. That is a young JOC, not a hung one: it is not fenced.
#[test]
fn a_restarted_container_of_the_former_active_joc_is_not_fenced_while_it_starts() {
    let now = Instant::now();
    let answers = Answers {
        joc: Ok(own_age(view(Some("joc-1"), None), 9)),
        ..Answers::default()
    };
    let cases = [
        ("same run: hung", own_pod().joc_run, true),
        (
            "new run: starting",
            ContainerRun::Running("1@t9".to_owned()),
            false,
        ),
        ("stopped: nothing to fence", ContainerRun::Stopped, false),
        ("run unknown: as before", ContainerRun::Unknown, true),
    ];
    for (name, run, fenced) in cases {
        let mut f = facts(now, Role::Standby, Some("standby"), true);
        if let Some(own) = &mut f.own {
            own.joc_run = run;
        }
        let (_, actions) = drive(&was_active(standby(true)), &mut f, Event::JocLook, &answers);
        assert_eq!(
            brief(&actions).contains(&"fence".to_owned()),
            fenced,
            "{name}: {:?}",
            brief(&actions)
        );
    }
}

/// Found by the js7 fault campaign: a holder frozen with its JOC, thawed
/// after the TTL, first followed the lease (role-change command, label:
/// about 90 ms) and fenced only then, while its thawed JOC ran services
/// beside the new active one. Now the fence comes first, judged by the
/// lease's own deadline; a holder whose lease is still valid is not fenced.
#[test]
fn a_holder_thawed_after_its_lease_ran_out_fences_before_it_follows_the_lease() {
    let now = Instant::now();
    let frozen = |state: State| {
        let mut state = was_active(state);
        if let Some(joc) = &mut state.joc {
            joc.last_look = Some(now - Duration::from_secs(8));
        }
        state
    };
    let expired = Role::Active {
        term: 5,
        until: now - Duration::from_secs(2),
    };
    let answers = Answers {
        joc: Ok(view(Some(ME), None)),
        ..Answers::default()
    };
    for event in [Event::Tick, Event::LeaseChanged] {
        let mut f = facts(now, expired, Some("active"), false);
        let (_, actions) = drive(&frozen(holding(true, 5)), &mut f, event.clone(), &answers);
        let b = brief(&actions);
        assert_eq!(
            b.first().map(String::as_str),
            Some("fence"),
            "{event:?}: {b:?}"
        );
        assert!(
            position(&actions, "fence") < position(&actions, "publish:standby"),
            "{event:?}: {b:?}"
        );
        assert_eq!(b.iter().filter(|a| *a == "fence").count(), 1, "{b:?}");
    }
    // Its lease still valid (a long look, not a freeze past the lease): no fence.
    let mut f = facts(now, active(5, now), Some("active"), false);
    let (_, actions) = drive(&frozen(holding(true, 5)), &mut f, Event::Tick, &answers);
    assert!(
        !brief(&actions).contains(&"fence".to_owned()),
        "{:?}",
        brief(&actions)
    );
}

/// The 1.01 s of two JOCs a js7 campaign found after a 30 s database
/// outage: a standby JOC polled first when the database came back, saw the
/// active member's heartbeat 31 s old and took over while the old active JOC
/// still ran its services until its own next poll. The old logic fenced
/// nothing while the tables were unreadable.
#[test]
fn the_active_joc_is_fenced_while_the_database_is_gone_before_its_heartbeat_looks_silent() {
    let t0 = Instant::now();
    let gone = || JocReadError {
        not_installed: false,
        message: "JOC's tables cannot be read: connection refused".to_owned(),
    };
    // A look that reads: this member's JOC is JOC's live active member and
    // the other members' JOCs stand ready.
    let mut f = facts(t0, active(5, t0), Some("active"), false);
    let (mut state, _) = drive(
        &was_active(holding(true, 5)),
        &mut f,
        Event::JocLook,
        &Answers::default(),
    );
    let unreadable = Answers {
        joc: Err(gone()),
        ..Answers::default()
    };
    // (seconds since the last read, fenced?): silent after 5 − 2 × 1 = 3 s.
    for (secs, fenced) in [(1, false), (3, false), (4, true), (5, false)] {
        let now = t0 + Duration::from_secs(secs);
        let mut f = facts(now, active(5, now), Some("active"), false);
        let (after, actions) = drive(&state, &mut f, Event::JocLook, &unreadable);
        let b = brief(&actions);
        // The JVM only: JOC's start would fail while the database is gone.
        assert_eq!(
            b.contains(&"fence-jvm-only".to_owned()),
            fenced,
            "after {secs}s: {b:?}"
        );
        assert!(!b.contains(&"fence".to_owned()), "{b:?}");
        if fenced {
            assert!(
                actions.contains(&Action::Metric(Metric::JocFenced("database_lost"))),
                "{actions:?}"
            );
        }
        state = after;
    }
    // The database answers: the container left running is ended, once.
    for (secs, ends) in [(6, true), (7, false)] {
        let now = t0 + Duration::from_secs(secs);
        let mut f = facts(now, active(5, now), Some("active"), false);
        let (after, actions) = drive(&state, &mut f, Event::JocLook, &Answers::default());
        let b = brief(&actions);
        assert_eq!(
            b.contains(&"end-joc-container".to_owned()),
            ends,
            "after {secs}s: {b:?}"
        );
        state = after;
    }
}

#[test]
fn no_fence_for_a_database_outage_without_a_ready_joc_to_take_over() {
    let t0 = Instant::now();
    let mut alone = view(Some(ME), None);
    for i in &mut alone.instances {
        if i.member_id != id(ME) {
            i.heart_beat_age_s = 60;
        }
    }
    let mut f = facts(t0, active(5, t0), Some("active"), false);
    let (state, _) = drive(
        &was_active(holding(true, 5)),
        &mut f,
        Event::JocLook,
        &Answers {
            joc: Ok(alone),
            ..Answers::default()
        },
    );
    let now = t0 + Duration::from_secs(30);
    let mut f = facts(now, active(5, now), Some("active"), false);
    let (_, actions) = drive(
        &state,
        &mut f,
        Event::JocLook,
        &Answers {
            joc: Err(JocReadError {
                not_installed: false,
                message: "connection refused".to_owned(),
            }),
            ..Answers::default()
        },
    );
    assert!(
        !brief(&actions).contains(&"fence".to_owned()),
        "{:?}",
        brief(&actions)
    );
}
