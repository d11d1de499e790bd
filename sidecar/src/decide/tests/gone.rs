//! `decide/gone.rs`: Kubernetes' word that another holder's processes are
//! gone reaches the elector once, only for the term it was first seen under.

use super::*;

fn run(text: &str) -> ContainerRun {
    match text {
        "unknown" => ContainerRun::Unknown,
        "stopped" => ContainerRun::Stopped,
        run => ContainerRun::Running(run.to_owned()),
    }
}

/// Facts of a standby that sees `joc-1` hold `term`, whose pod's sidecar
/// and `joc` container are in runs `sidecar` and `joc`.
fn seeing(now: Instant, term: i64, sidecar: &str, joc: &str) -> Facts {
    let mut facts = facts(now, Role::Standby, Some("standby"), true);
    facts.elector.live_holder = Some(("joc-1".to_owned(), term));
    for pod in &mut facts.pods {
        if pod.name == "joc-1" {
            pod.sidecar_run = run(sidecar);
            pod.joc_run = run(joc);
        }
    }
    facts
}

fn confirmations(actions: &[Action]) -> Vec<String> {
    brief(actions)
        .into_iter()
        .filter(|a| a.starts_with("holder-gone"))
        .collect()
}

/// One look: the holder's term, its sidecar run, its `joc` run, and the
/// confirmations expected after it.
type Look = (i64, &'static str, &'static str, &'static [&'static str]);

#[test]
fn the_elector_hears_once_when_both_containers_of_the_holder_ran_anew() {
    let now = Instant::now();
    // (story, what this sidecar sees event by event: term, sidecar run,
    //  joc run; the confirmations expected after each)
    #[rustfmt::skip]
    let stories: &[(&str, &[Look])] = &[
        ("both containers ran anew: told once", &[
            (4, "0@t0", "0@t0", &[]),
            (4, "1@t1", "1@t1", &["holder-gone:joc-1:4"]),
            (4, "1@t1", "1@t1", &[]),
        ]),
        ("stopped counts as gone", &[
            (4, "0@t0", "0@t0", &[]),
            (4, "stopped", "stopped", &["holder-gone:joc-1:4"]),
        ]),
        ("only the sidecar ran anew: JOC's container may still act", &[
            (4, "0@t0", "0@t0", &[]),
            (4, "1@t1", "0@t0", &[]),
        ]),
        ("only JOC's container ran anew (a fence): the holder lives", &[
            (4, "0@t0", "0@t0", &[]),
            (4, "0@t0", "1@t1", &[]),
        ]),
        ("first seen before the pods' status: the first runs seen are the baseline", &[
            (4, "unknown", "unknown", &[]),
            (4, "0@t0", "0@t0", &[]),
            (4, "1@t1", "1@t1", &["holder-gone:joc-1:4"]),
        ]),
        ("a stopped container is no baseline: it may be starting", &[
            (4, "unknown", "unknown", &[]),
            (4, "stopped", "stopped", &[]),
            (4, "0@t0", "0@t0", &[]),
            (4, "0@t0", "0@t0", &[]),
        ]),
        ("status gone from the cache proves nothing", &[
            (4, "0@t0", "0@t0", &[]),
            (4, "unknown", "unknown", &[]),
        ]),
        // The runs at a term's first sight are the baseline: a term taken
        // by the new run (after the lease expired) is that run's.
        ("a new term is judged against the runs at its own first sight", &[
            (4, "0@t0", "0@t0", &[]),
            (5, "1@t1", "1@t1", &[]),
            (5, "1@t1", "1@t1", &[]),
            (5, "2@t2", "2@t2", &["holder-gone:joc-1:5"]),
        ]),
    ];
    for (story, looks) in stories {
        let mut state = standby(false);
        for (i, (term, sidecar, joc, expected)) in looks.iter().enumerate() {
            let facts = seeing(now, *term, sidecar, joc);
            let (next, actions) = decide(&state, &facts, Event::PodsChanged);
            assert_eq!(confirmations(&actions), *expected, "{story}, look {i}");
            state = next;
        }
    }
}

#[test]
fn nothing_is_remembered_while_this_member_holds_or_nobody_does() {
    let now = Instant::now();
    let mut state = standby(false);
    let (next, _) = decide(&state, &seeing(now, 4, "0@t0", "0@t0"), Event::Tick);
    assert!(next.holder_seen.is_some());
    state = next;
    // The lease expired: nobody holds it.
    let mut free = seeing(now, 4, "1@t1", "1@t1");
    free.elector.live_holder = None;
    let (next, actions) = drive(&state, &mut free, Event::Tick, &Answers::default());
    assert!(next.holder_seen.is_none() && confirmations(&actions).is_empty());
    // This member holds it.
    let (next, actions) = decide(
        &holding(false, 6),
        &facts(now, active(6, now), Some("active"), false),
        Event::Tick,
    );
    assert!(next.holder_seen.is_none() && confirmations(&actions).is_empty());
}

/// A standby that has not read the lease since another member took it
/// (MariaDB: once per TTL) reads it as soon as that member labels itself
/// active, so that a crash right after finds the holder's runs known.
#[test]
fn a_pod_labeled_active_under_an_unread_holder_makes_the_standby_read_the_lease_once() {
    let now = Instant::now();
    let looks = |actions: &[Action]| -> Vec<String> {
        brief(actions)
            .into_iter()
            .filter(|a| a.starts_with("look-lease"))
            .collect()
    };
    // joc-1 carries the active label; the lease as last read named no one.
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    f.elector.live_holder = None;
    let (after, actions) = drive(
        &standby(false),
        &mut f,
        Event::PodsChanged,
        &Answers::default(),
    );
    assert_eq!(looks(&actions), ["look-lease:joc-1"]);
    let (after, actions) = drive(&after, &mut f, Event::Tick, &Answers::default());
    assert_eq!(
        looks(&actions),
        Vec::<String>::new(),
        "once per labeled pod"
    );
    // Read: the lease names joc-1; nothing more to look for.
    f.elector.live_holder = Some(("joc-1".to_owned(), 4));
    let (after, actions) = drive(&after, &mut f, Event::PodsChanged, &Answers::default());
    assert_eq!(looks(&actions), Vec::<String>::new());
    // joc-2 labeled next, under a term not read yet: read again.
    f.pods[1].role = Some("standby".into());
    f.pods[2].role = Some("active".into());
    let (_, actions) = drive(&after, &mut f, Event::PodsChanged, &Answers::default());
    assert_eq!(looks(&actions), ["look-lease:joc-2"]);
    // The holder itself never asks.
    let mut f = facts(now, active(5, now), Some("active"), true);
    f.elector.live_holder = None;
    let (_, actions) = drive(
        &holding(false, 5),
        &mut f,
        Event::PodsChanged,
        &Answers::default(),
    );
    assert_eq!(looks(&actions), Vec::<String>::new());
}
