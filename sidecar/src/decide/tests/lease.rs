//! Following the lease, labels, failsafe, freeze.

use super::*;

struct Case {
    name: &'static str,
    state: State,
    facts: Facts,
    event: Event,
    answers: Answers,
    expect: &'static [&'static str],
}

fn run_cases(cases: Vec<Case>) {
    for case in cases {
        let mut facts = case.facts;
        let (_, actions) = drive(&case.state, &mut facts, case.event, &case.answers);
        assert_eq!(brief(&actions), case.expect, "case {:?}", case.name);
    }
}

fn down(mut facts: Facts) -> Facts {
    facts.role = Role::Standby;
    facts.elector = ElectorFacts {
        connected: false,
        failing: true,
        holder_is_me: true,
        live_holder: None,
    };
    facts
}

#[test]
fn every_lease_path_in_order() {
    let now = Instant::now();
    let lost = |holder_is_me| {
        let mut f = facts(now, Role::Standby, Some("active"), true);
        f.elector.holder_is_me = holder_is_me;
        f
    };
    let demoted = &["publish:standby", "label:joc-0:standby", "event:Demoted"][..];
    run_cases(vec![
        Case {
            name: "gains the lease: labels itself, then tells the cockpit",
            state: standby(false),
            facts: facts(now, active(5, now), Some("standby"), false),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &[
                "list-pods",
                "label:joc-0:active:5",
                "event:BecameActive",
                "publish:active:5",
            ],
        },
        Case {
            name: "gains the lease: strips another active label first",
            state: standby(false),
            facts: facts(now, active(5, now), Some("standby"), true),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &[
                "list-pods",
                "label:joc-1:standby",
                "label:joc-0:active:5",
                "event:BecameActive",
                "publish:active:5",
            ],
        },
        Case {
            name: "gains the lease, API list fails: the cache and a read of each mark",
            state: standby(false),
            facts: facts(now, active(5, now), Some("standby"), true),
            event: Event::LeaseChanged,
            answers: Answers {
                pods_now: Some(Err("timeout".into())),
                ..Answers::default()
            },
            expect: &[
                "list-pods",
                "read-marks:joc-1",
                "label:joc-1:standby",
                "label:joc-0:active:5",
                "event:BecameActive",
                "publish:active:5",
            ],
        },
        Case {
            name: "gains the lease but the label fails: no Event, the cockpit still hears",
            state: standby(false),
            facts: facts(now, active(5, now), Some("standby"), false),
            event: Event::LeaseChanged,
            answers: Answers {
                labeled: false,
                ..Answers::default()
            },
            expect: &["list-pods", "label:joc-0:active:5", "publish:active:5"],
        },
        Case {
            name: "keeps holding: renews the report only",
            state: holding(false, 5),
            facts: facts(now, active(5, now), Some("active"), false),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &["publish:active:5"],
        },
        Case {
            name: "lost the lease to another member",
            state: holding(false, 5),
            facts: lost(false),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: demoted,
        },
        Case {
            name: "lost the role while the status still names us: waits for it, then demotes",
            state: holding(false, 5),
            facts: lost(true),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &[
                "wait-elector",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        },
        Case {
            name: "database down, alone active: failsafe",
            state: holding(false, 5),
            facts: down(facts(now, Role::Standby, Some("active"), false)),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &["list-pods", "mark-failsafe", "publish:active:5"],
        },
        Case {
            name: "database down, another pod active: demotes",
            state: holding(false, 5),
            facts: down(facts(now, Role::Standby, Some("active"), false)),
            event: Event::LeaseChanged,
            answers: Answers {
                pods_now: Some(Ok(vec![
                    member(ME, Some("active")),
                    member("joc-1", Some("active")),
                ])),
                ..Answers::default()
            },
            expect: &[
                "list-pods",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        },
        Case {
            name: "database down, own label gone: demotes",
            state: holding(false, 5),
            facts: down(facts(now, Role::Standby, Some("active"), false)),
            event: Event::LeaseChanged,
            answers: Answers {
                pods_now: Some(Ok(vec![member(ME, Some("standby"))])),
                ..Answers::default()
            },
            expect: &[
                "list-pods",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        },
        Case {
            name: "database and API down, not yet failsafe: demotes (isolation)",
            state: holding(false, 5),
            facts: down(facts(now, Role::Standby, Some("active"), false)),
            event: Event::LeaseChanged,
            answers: Answers {
                pods_now: Some(Err("connection refused".into())),
                ..Answers::default()
            },
            expect: &[
                "list-pods",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        },
        Case {
            name: "failsafe mark refused: demotes",
            state: holding(false, 5),
            facts: down(facts(now, Role::Standby, Some("active"), false)),
            event: Event::LeaseChanged,
            answers: Answers {
                marked: false,
                ..Answers::default()
            },
            expect: &[
                "list-pods",
                "mark-failsafe",
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
            ],
        },
        Case {
            name: "the elector stopped: demotes and exits",
            state: holding(false, 5),
            facts: facts(now, active(5, now), Some("active"), false),
            event: Event::ElectorStopped,
            answers: Answers::default(),
            expect: &[
                "publish:standby",
                "label:joc-0:standby",
                "event:Demoted",
                "exit",
            ],
        },
        Case {
            name: "standby, nothing held: nothing to do",
            state: standby(false),
            facts: facts(now, Role::Standby, Some("standby"), true),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &[],
        },
        Case {
            name: "an expired role is no role",
            state: standby(false),
            facts: facts(
                now,
                Role::Active {
                    term: 5,
                    until: now,
                },
                Some("standby"),
                false,
            ),
            event: Event::LeaseChanged,
            answers: Answers::default(),
            expect: &[],
        },
    ]);
}

#[test]
fn failsafe_mode_holds_while_the_api_is_silent_and_ends_when_the_database_returns() {
    let now = Instant::now();
    let mut facts_down = down(facts(now, Role::Standby, Some("active"), false));
    let (failsafe, _) = drive(
        &holding(false, 5),
        &mut facts_down,
        Event::Tick,
        &Answers::default(),
    );
    assert_eq!(failsafe.failsafe_until, Some(now + VALIDITY));
    assert_eq!(failsafe.active_term, Some(5));

    // Cut off from the API too: the last check's deadline still holds...
    let later = now + Duration::from_secs(1);
    let mut silent = down(facts(later, Role::Standby, Some("active"), false));
    let api_down = Answers {
        pods_now: Some(Err("timeout".into())),
        ..Answers::default()
    };
    let (_, actions) = drive(&failsafe, &mut silent, Event::LeaseChanged, &api_down);
    assert_eq!(brief(&actions), ["list-pods", "publish:active:5"]);
    // ...and runs out by itself.
    let mut expired = down(facts(now + VALIDITY, Role::Standby, Some("active"), false));
    let (after, actions) = drive(&failsafe, &mut expired, Event::LeaseChanged, &api_down);
    assert_eq!(
        brief(&actions),
        [
            "list-pods",
            "publish:standby",
            "label:joc-0:standby",
            "event:Demoted"
        ]
    );
    assert_eq!(after.failsafe_until, None);

    // The database is back: the mark goes (own label rewritten), active on.
    let mut back = facts(later, active(5, later), Some("active"), false);
    let (after, actions) = drive(
        &failsafe,
        &mut back,
        Event::LeaseChanged,
        &Answers::default(),
    );
    assert_eq!(
        brief(&actions),
        ["label:joc-0:active:5", "publish:active:5"]
    );
    assert_eq!((after.failsafe_until, after.active_term), (None, Some(5)));
}

#[test]
fn a_failsafe_holder_that_sees_another_active_pod_demotes() {
    let now = Instant::now();
    let mut state = holding(false, 5);
    state.failsafe_until = Some(now + VALIDITY);
    let mut f = down(facts(now, Role::Standby, Some("active"), true));
    let alone = Answers {
        pods_now: Some(Ok(vec![member(ME, Some("active"))])),
        ..Answers::default()
    };
    let (_, actions) = drive(&state, &mut f, Event::PodsChanged, &alone);
    // Following the lease keeps failsafe (its own check passes), then the
    // pod cache shows another active member.
    assert_eq!(
        brief(&actions),
        [
            "list-pods",
            "publish:active:5",
            "publish:standby",
            "label:joc-0:standby",
            "event:Demoted"
        ]
    );
}

#[test]
fn hand_made_label_changes_are_corrected() {
    let now = Instant::now();
    let cases: [(&str, State, Facts, &[&str]); 3] = [
        (
            "the holder's own label removed, another pod labeled active",
            holding(false, 5),
            facts(now, active(5, now), Some("standby"), true),
            &[
                "publish:active:5",
                "label:joc-0:active:5",
                "label:joc-1:standby",
            ],
        ),
        (
            "a standby labeled active by hand",
            standby(false),
            facts(now, Role::Standby, Some("active"), false),
            &["label:joc-0:standby"],
        ),
        (
            "a standby does not touch other pods' labels",
            standby(false),
            facts(now, Role::Standby, Some("standby"), true),
            &[],
        ),
    ];
    for (name, state, mut f, expect) in cases {
        let (_, actions) = drive(&state, &mut f, Event::PodsChanged, &Answers::default());
        assert_eq!(brief(&actions), expect, "{name}");
    }
}

/// Found by the benchmark: a holder frozen (SIGSTOP) past its lease and
/// then resumed saw the new holder's label change first and, still
/// believing itself active, relabeled itself and stripped the new holder:
/// two endpoints for 50–100 ms. The old `correct_labels` compared the label
/// with `active_term` before following the lease.
#[test]
fn a_holder_resumed_after_a_freeze_follows_the_lease_before_it_defends_its_label() {
    let resumed = Instant::now();
    let frozen_at = resumed - Duration::from_secs(10);
    let mut f = facts(
        resumed,
        // The elector has not run yet: its last role ran out long ago.
        Role::Active {
            term: 5,
            until: frozen_at + VALIDITY,
        },
        Some("standby"),
        true,
    );
    f.elector.holder_is_me = false;
    let (after, actions) = drive(
        &holding(false, 5),
        &mut f,
        Event::PodsChanged,
        &Answers::default(),
    );
    let brief = brief(&actions);
    assert_eq!(
        brief,
        ["publish:standby", "label:joc-0:standby", "event:Demoted"]
    );
    assert!(!brief.contains(&"label:joc-0:active:5".to_owned()));
    assert!(!brief.contains(&"label:joc-1:standby".to_owned()));
    assert_eq!(after.active_term, None);
}

/// Found by the fault campaign (MariaDB, a database restart then a cut-off:
/// 1.8–2.0 s overlaps): the new holder waited only until the failsafe
/// holder's mark went, but that holder's cockpit may act on its last
/// failsafe role report for a whole validity. The new holder must wait out
/// the validity after taking the label away, before it labels itself.
#[test]
fn a_new_holder_waits_out_the_failsafe_holders_last_role_report() {
    let now = Instant::now();
    let mut f = facts(now, active(6, now), Some("standby"), true);
    let answers = Answers {
        failsafe_pods: vec!["joc-1".into()],
        ..Answers::default()
    };
    let (_, actions) = drive(&standby(false), &mut f, Event::LeaseChanged, &answers);
    assert_eq!(
        brief(&actions),
        [
            "list-pods",
            "label:joc-1:standby",
            "wait-failsafe:joc-1:4s",
            "label:joc-0:active:6",
            "event:BecameActive",
            "publish:active:6"
        ]
    );
    assert!(
        actions.contains(&Action::WaitOutFailsafe {
            pod: "joc-1".into(),
            period: VALIDITY
        }),
        "the whole validity, not until the mark goes"
    );
}

#[test]
fn a_stepped_down_member_never_takes_the_lease_again() {
    let now = Instant::now();
    let mut state = standby(false);
    state.stepped_down = true;
    let mut f = facts(now, active(7, now), Some("standby"), false);
    let (after, actions) = drive(&state, &mut f, Event::Tick, &Answers::default());
    assert_eq!(brief(&actions), Vec::<String>::new());
    assert_eq!(after.active_term, None);
}

/// Found by the short fault campaign after this reshaping (PostgreSQL, an
/// API server restart, then the active pod deleted and the next one
/// killed): the pods' watch was relisting after the restart, so the new
/// holder's cache was five seconds old and showed no other active pod; it
/// labeled itself while the killed holder's pod still carried the label,
/// and the Service routed to both for 3.4 s. The old logic (like the first
/// reshaping) took the pods to strip from the cache.
#[test]
fn a_new_holder_strips_active_labels_its_stale_cache_does_not_show() {
    let now = Instant::now();
    // The cache: nobody else active. The API server: joc-1 still is.
    let mut f = facts(now, active(3, now), Some("standby"), false);
    let live = Answers {
        pods_now: Some(Ok(vec![
            member(ME, Some("standby")),
            member("joc-1", Some("active")),
            member("joc-2", Some("standby")),
        ])),
        ..Answers::default()
    };
    let (_, actions) = drive(&standby(false), &mut f, Event::LeaseChanged, &live);
    assert!(
        position(&actions, "label:joc-1:standby") < position(&actions, "label:joc-0:active:3"),
        "{:?}",
        brief(&actions)
    );
}
