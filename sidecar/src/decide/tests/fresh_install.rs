//! js7 mode on a fresh install (docs/joc-facts.md fact 9): no Controller
//! registered yet.

use super::*;

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
