//! js7 mode: what the sidecar does when Kubernetes reports a `joc`
//! container run anew or stopped, its own or the active member's.

use super::*;
use crate::js7::ContainerRun;

/// The kubelet's report of a new run of JOC's container is an input: the
/// sidecar looks at JOC at once and drops readiness, not at the next tick.
#[test]
fn a_reported_joc_restart_drops_readiness_at_once() {
    let cases: Vec<(&str, ContainerRun, Vec<&str>, Option<bool>)> = vec![
        (
            "same run: nothing to look at",
            own_pod().joc_run,
            vec![],
            Some(true),
        ),
        (
            "restarted",
            ContainerRun::Running("1@t9".to_owned()),
            vec!["read-joc", "joc-health:false", "ready:false"],
            Some(false),
        ),
        (
            "stopped",
            ContainerRun::Stopped,
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
                p.joc_run = ContainerRun::Running(run.to_owned());
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
            vec!["release-gone:joc-1->joc-0"],
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
            super::joc::waiting(Some("joc-1"), Some(5))
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
                ["release-gone:joc-1->joc-0"],
                "{case}: as holder"
            );
        }
    }
}

/// The row of a gone active JOC goes to the holder's own JOC only when that
/// JOC can take over; else it is deleted and JOC's instances elect.
#[test]
fn the_gone_row_goes_to_the_holder_only_when_its_joc_can_take_over() {
    let now = Instant::now();
    let released = |state: State, own_age: i64| {
        let mut f = facts(now, active(5, now), Some("active"), true);
        let mut v = view(Some("joc-1"), None);
        v.instances[0].heart_beat_age_s = own_age;
        let answers = Answers {
            joc: Ok(v.clone()),
            ..Answers::default()
        };
        let (state, _) = drive(&state, &mut f, Event::JocLook, &answers);
        for p in &mut f.pods {
            if p.name == "joc-1" {
                p.joc_run = ContainerRun::Running("1@t9".to_owned());
            }
        }
        let (_, actions) = drive(&state, &mut f, Event::JocLook, &answers);
        brief(&actions)
            .into_iter()
            .filter(|a| a.starts_with("release-gone"))
            .collect::<Vec<_>>()
    };
    let holder = || super::joc::waiting(Some("joc-1"), Some(5));
    assert_eq!(released(holder(), 0), ["release-gone:joc-1->joc-0"]);
    // Its own JOC's heartbeat is exceeded: it cannot take over.
    assert_eq!(released(holder(), 9), ["release-gone:joc-1"]);
}
