//! Readiness from the JOC process now running, and the heartbeat kept for
//! a JOC waiting for its first Controller.

use super::*;

type Look = (ContainerRun, JocView, bool);

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
    use ContainerRun::{Running, Stopped, Unknown};
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
    let running = ContainerRun::Running("0@t0".to_owned());
    let grace = Duration::from_secs(62);
    let s = |secs: u64| Some(Duration::from_secs(secs));
    // (case, view, me, run, since the Controller, own heartbeat fresh, keep)
    type Row<'a> = (
        &'a str,
        JocView,
        &'a str,
        ContainerRun,
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
            ContainerRun::Stopped,
            None,
            false,
            false,
        ),
        (
            "run unknown",
            waiting(9, vec![]),
            "a:1",
            ContainerRun::Unknown,
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
