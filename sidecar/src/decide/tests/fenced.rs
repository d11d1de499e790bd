//! A member the user fenced (`joc-ha.dev/fenced-members`): gives up the
//! lease, never takes or receives it, takes part again once unfenced; a
//! malformed list changes nothing.

use std::collections::BTreeSet;

use super::*;

fn fencing(f: &mut Facts, fenced: Result<&[&str], &str>) {
    f.cluster = Some(ClusterFacts {
        fenced: fenced
            .map(|names| {
                names
                    .iter()
                    .map(|n| (*n).to_owned())
                    .collect::<BTreeSet<_>>()
            })
            .map_err(str::to_owned),
        ..ClusterFacts::default()
    });
}

#[test]
fn a_fenced_holder_hands_over_and_never_takes_the_lease_until_unfenced() {
    let now = Instant::now();
    for js7 in [false, true] {
        let mut f = facts(now, active(5, now), Some("active"), false);
        fencing(&mut f, Ok(&[ME]));
        let (after, actions) = drive(
            &holding(js7, 5),
            &mut f,
            Event::ClusterChanged,
            &Answers::default(),
        );
        let mut gives_up = vec![
            "event:MemberFenced",
            "ready:false",
            "publish:standby",
            "members",
        ];
        if js7 {
            gives_up.push("joc-switch:joc-0->joc-1");
        }
        gives_up.extend([
            "handover:joc-1",
            "publish:standby",
            "label:joc-0:standby",
            "event:Demoted",
        ]);
        if js7 {
            gives_up.push("wait-joc-leave");
        }
        assert_eq!(brief(&actions), gives_up, "js7 {js7}");
        assert!(after.fenced && !after.may_hold(), "js7 {js7}");
        assert_eq!(after.active_term, None);

        // The elector offers the lease again (say, nobody else took it):
        // not taken, no label, and readiness stays off in js7 mode too.
        f.role = active(10, now);
        f.elector.holder_is_me = true;
        f.pods[0].role = Some("standby".into());
        let (still, actions) = drive(&after, &mut f, Event::Tick, &Answers::default());
        assert_eq!(still.active_term, None, "js7 {js7}: {:?}", brief(&actions));
        let said = brief(&actions);
        assert!(
            !said
                .iter()
                .any(|a| a.starts_with("label:joc-0:active") || a == "ready:true"),
            "js7 {js7}: {said:?}"
        );
        assert!(
            !said.iter().any(|a| a.starts_with("event:MemberFenced")),
            "one Event: {said:?}"
        );

        // Unfenced: takes part again (generic: ready at once; js7: at the
        // next look at JOC, by its heartbeat).
        f.role = Role::Standby;
        f.elector.holder_is_me = false;
        fencing(&mut f, Ok(&[]));
        let (back, actions) = drive(&still, &mut f, Event::ClusterChanged, &Answers::default());
        let expected: &[&str] = if js7 {
            &["event:MemberUnfenced"]
        } else {
            &["event:MemberUnfenced", "ready:true"]
        };
        assert_eq!(brief(&actions), expected, "js7 {js7}");
        assert!(!back.fenced && back.may_hold());
        if js7 {
            // Unfenced before any tick looked at JOC: its next look sets
            // the readiness again.
            let mut f = facts(now, Role::Standby, Some("standby"), true);
            fencing(&mut f, Ok(&[]));
            let (back, _) = drive(&after, &mut f, Event::ClusterChanged, &Answers::default());
            let answers = Answers {
                joc: Ok(view(Some("joc-1"), None)),
                ..Answers::default()
            };
            let (_, actions) = drive(&back, &mut f, Event::Tick, &answers);
            assert!(
                brief(&actions).iter().any(|a| a == "ready:true"),
                "{:?}",
                brief(&actions)
            );
        }
    }
}

#[test]
fn a_fenced_standby_stays_out_and_the_holder_never_hands_to_it() {
    let now = Instant::now();
    // The standby itself: not ready, nothing to hand over.
    let mut f = facts(now, Role::Standby, Some("standby"), true);
    fencing(&mut f, Ok(&[ME, "joc-2"]));
    let (after, actions) = drive(
        &standby(false),
        &mut f,
        Event::ClusterChanged,
        &Answers::default(),
    );
    assert_eq!(brief(&actions), ["event:MemberFenced", "ready:false"]);
    assert!(after.fenced);

    // The holder (joc-0 here) asked to switch to a fenced joc-1: rejected,
    // and `any` skips it for joc-2.
    for (asked, expected) in [("joc-1", "record:Rejected"), ("any", "handover:joc-2")] {
        let mut f = facts(now, active(5, now), Some("active"), false);
        f.cluster = Some(ClusterFacts {
            switchover_to: Some(asked.to_owned()),
            fenced: Ok(["joc-1".to_owned()].into()),
        });
        let (_, actions) = drive(
            &holding(false, 5),
            &mut f,
            Event::ClusterChanged,
            &Answers::default(),
        );
        let brief = brief(&actions);
        assert!(brief.iter().any(|a| a == expected), "{asked}: {brief:?}");
        assert!(
            !brief.iter().any(|a| a == "handover:joc-1"),
            "{asked}: {brief:?}"
        );
        if asked == "joc-1" {
            let note = actions.iter().find_map(|a| match a {
                Action::Event { reason, note, .. }
                    if *reason == joc_ha_crds::names::reason::SWITCHOVER_REJECTED =>
                {
                    Some(note.clone())
                }
                _ => None,
            });
            assert!(
                note.as_deref()
                    .is_some_and(|n| n.contains("joc-1 is fenced")),
                "{note:?}"
            );
        }
    }
}

#[test]
fn the_js7_holder_asks_joc_back_instead_of_following_it_to_a_fenced_member() {
    let now = Instant::now();
    let mut f = facts(now, active(5, now), Some("active"), false);
    // JOC moved its active member to joc-1 by itself, while this member held term 5.
    let answers = Answers {
        joc: Ok(view(Some("joc-1"), None)),
        ..Answers::default()
    };
    let (_, follows) = drive(&holding(true, 5), &mut f.clone(), Event::Tick, &answers);
    assert!(
        brief(&follows).iter().any(|a| a == "handover:joc-1"),
        "unfenced: follows JOC {:?}",
        brief(&follows)
    );
    fencing(&mut f, Ok(&["joc-1"]));
    let (_, actions) = drive(&holding(true, 5), &mut f, Event::Tick, &answers);
    let brief = brief(&actions);
    assert!(!brief.iter().any(|a| a == "handover:joc-1"), "{brief:?}");
    assert!(
        brief.iter().any(|a| a == "joc-switch:joc-1->joc-0"),
        "{brief:?}"
    );
}

#[test]
fn a_malformed_list_changes_nothing_and_is_logged_once() {
    let now = Instant::now();
    for was_fenced in [false, true] {
        let mut state = holding(false, 5);
        state.fenced = was_fenced;
        if was_fenced {
            state.active_term = None;
        }
        let mut f = facts(
            now,
            if was_fenced {
                Role::Standby
            } else {
                active(5, now)
            },
            Some(if was_fenced { "standby" } else { "active" }),
            false,
        );
        fencing(
            &mut f,
            Err("joc-ha.dev/fenced-members must be a JSON array"),
        );
        let (after, actions) = drive(&state, &mut f, Event::ClusterChanged, &Answers::default());
        assert_eq!(after.fenced, was_fenced);
        assert_eq!(
            brief(&actions),
            Vec::<String>::new(),
            "was fenced {was_fenced}"
        );
        let warned = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Log(Level::Warn, m) if m.contains("JSON array")))
                .count()
        };
        assert_eq!(warned(&actions), 1);
        let (_, again) = drive(&after, &mut f, Event::ClusterChanged, &Answers::default());
        assert_eq!(warned(&again), 0, "logged once");
    }
}
