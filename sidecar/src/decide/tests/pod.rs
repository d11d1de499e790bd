//! This pod's own facts: deletion, `GET /prestop` from anyone, a removed
//! selector label (issue 19, cases 1 and 3).

use super::*;

fn holder_facts(now: Instant) -> Facts {
    facts(now, active(5, now), Some("active"), false)
}

fn stepped_down(now: Instant, ago: Duration) -> State {
    let mut state = standby(false);
    state.stepped_down = true;
    state.stepped_down_at = now.checked_sub(ago);
    state
}

/// Issue 19, case 1: `GET /prestop` on each member made every member step
/// down for good. Now only the pod's deletion (or SIGTERM) does; preStop
/// reads the pod and, when it is not being deleted, changes nothing.
#[test]
fn only_the_pods_deletion_makes_a_member_step_down() {
    let now = Instant::now();
    let handed = [
        "ready:false",
        "publish:standby",
        "members",
        "handover:joc-1",
        "publish:standby",
        "label:joc-0:standby",
        "event:Demoted",
    ];
    // (name, state, terminating, event, expected actions, stepped down, holds)
    type Case<'a> = (&'a str, State, bool, Event, Vec<&'a str>, bool, bool);
    let cases: Vec<Case> = vec![
        (
            "GET /prestop on the holder, pod not deleted",
            holding(false, 5),
            false,
            Event::Prestop,
            vec!["read-pod"],
            false,
            true,
        ),
        (
            "GET /prestop on a standby, pod not deleted",
            standby(false),
            false,
            Event::Prestop,
            vec!["read-pod"],
            false,
            false,
        ),
        (
            "GET /prestop while the pod is being deleted",
            holding(false, 5),
            true,
            Event::Prestop,
            [&["read-pod"][..], &handed[..]].concat(),
            true,
            false,
        ),
        (
            "the pod watch sees the deletion",
            holding(false, 5),
            true,
            Event::PodsChanged,
            handed.to_vec(),
            true,
            false,
        ),
        (
            "GET /prestop after the hand-over: done at once",
            stepped_down(now, Duration::ZERO),
            true,
            Event::Prestop,
            vec![],
            true,
            false,
        ),
        (
            "a deleted pod stays stepped down past the bound",
            stepped_down(now, Duration::from_secs(3600)),
            true,
            Event::PodsChanged,
            vec![],
            true,
            false,
        ),
        (
            "stepped down but not deleted: eligible again after the bound",
            stepped_down(now, Duration::from_secs(3600)),
            false,
            Event::PodsChanged,
            vec!["ready:true"],
            false,
            false,
        ),
        (
            "stepped down but not deleted: not before the bound",
            stepped_down(now, Duration::from_secs(1)),
            false,
            Event::PodsChanged,
            vec![],
            true,
            false,
        ),
    ];
    for (name, state, terminating, event, expect, down, holds) in cases {
        let mut f = holder_facts(now);
        if !holds {
            f.role = Role::Standby;
            f.elector.holder_is_me = false;
            f.pods[0].role = Some("standby".into());
        }
        if let Some(own) = &mut f.own {
            own.terminating = terminating;
        }
        let (after, actions) = drive(&state, &mut f, event, &Answers::default());
        assert_eq!(brief(&actions), expect, "{name}");
        assert_eq!(after.stepped_down, down, "{name}");
        assert_eq!(after.active_term.is_some(), holds, "{name}");
    }
}

/// Issue 19, case 3: with `joc-ha.dev/component` (or the cluster label)
/// removed from the active pod, the Service was empty while its sidecar
/// kept the lease. The holder now gives it up with a Warning Event, does
/// not take it while the pod is out, and competes again once it is back.
#[test]
fn a_holder_whose_pod_left_the_services_selector_gives_up_the_lease() {
    let now = Instant::now();
    let gives_up = vec![
        "event:LeftService",
        "ready:false",
        "publish:standby",
        "members",
        "handover:joc-1",
        "publish:standby",
        "label:joc-0:standby",
        "event:Demoted",
    ];
    let no_component = OwnPodFacts {
        component: None,
        ..own_pod()
    };
    let other_cluster = OwnPodFacts {
        cluster: None,
        ..own_pod()
    };
    let orphaned = OwnPodFacts {
        controlled: false,
        ..own_pod()
    };
    for (name, own) in [
        ("component removed", no_component),
        ("cluster removed", other_cluster),
        ("orphaned", orphaned),
    ] {
        let mut f = holder_facts(now);
        f.own = Some(own);
        // Without the label the pod is not a member in the cache either.
        f.pods[0].component = None;
        let (after, actions) = drive(&holding(false, 5), &mut f, Event::Tick, &Answers::default());
        assert_eq!(brief(&actions), gives_up, "{name}");
        assert!(after.left_service.is_some(), "{name}");
        assert_eq!(after.active_term, None, "{name}");
        assert!(!after.stepped_down, "{name}: not for good");

        // While out, the lease is not taken even if the elector offers it.
        f.role = active(10, now);
        f.elector.holder_is_me = true;
        let (still, actions) = drive(&after, &mut f, Event::Tick, &Answers::default());
        assert_eq!(still.active_term, None, "{name}: {:?}", brief(&actions));
        assert!(
            !brief(&actions)
                .iter()
                .any(|a| a.starts_with("label:joc-0:active"))
        );

        // The label back: competes for the lease again.
        f.role = Role::Standby;
        f.elector.holder_is_me = false;
        f.own = Some(own_pod());
        f.pods[0].component = Some(joc_ha_crds::names::COMPONENT_MEMBER.to_owned());
        f.pods[0].role = Some("standby".into());
        let (back, actions) = drive(&still, &mut f, Event::PodsChanged, &Answers::default());
        assert_eq!(brief(&actions), vec!["ready:true"], "{name}");
        assert_eq!(back.left_service, None, "{name}");
    }
}

/// The other members must not count a pod outside the Service eligible.
#[test]
fn a_pod_without_the_member_label_is_not_a_switchover_target() {
    let now = Instant::now();
    let mut f = holder_facts(now);
    f.pods[1].component = None;
    let members = vec![
        MemberFacts {
            name: "joc-1".into(),
            ready: true,
            fresh: true,
        },
        MemberFacts {
            name: "joc-2".into(),
            ready: true,
            fresh: true,
        },
    ];
    let chosen = crate::eligibility::choose(
        &crate::eligibility::Target::Any,
        ME,
        &crate::decide::switchover::candidates(&f, &members),
    );
    assert_eq!(chosen, Ok("joc-2".to_owned()));
}
