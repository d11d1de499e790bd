//! Table-driven tests of the elector's decisions, per product capability.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::lease::store::{mysql, postgres, sqlite};

const ME: &str = "joc-0";
const MY_KEY: i64 = 11;
const OTHER_KEY: i64 = 77;

fn pg() -> Capabilities {
    postgres::DIALECT.caps
}
fn maria() -> Capabilities {
    mysql::DIALECT.caps
}
fn lite() -> Capabilities {
    sqlite::DIALECT.caps
}

fn timing() -> Timing {
    Timing::new(&LeaseConfig::new("c", ME))
}

fn local(caps: Capabilities) -> Local<'static> {
    Local {
        member: ME,
        key: MY_KEY,
        wants_lease: true,
        active: None,
        last_active_term: 0,
        steal: None,
        released: None,
        steal_failures: 0,
        holder_gone: None,
        caps,
        timing: timing(),
    }
}

/// A lease row as a statement saw it.
fn row(
    holder: Option<(&str, i64)>,
    term: i64,
    expires_in_ms: i64,
    renewed_age_ms: i64,
) -> LeaseView {
    LeaseView {
        holder: holder.map(|(name, _)| name.to_owned()),
        holder_session: holder.map(|(_, key)| key),
        term,
        expires_in_ms,
        renewed_age_ms: Some(renewed_age_ms),
        db_now_ms: 1_700_000_000_000,
    }
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// This member active under `term` (deadline in 3 s), on `caps`.
fn holding(term: i64, caps: Capabilities) -> Local<'static> {
    Local {
        active: Some(Active {
            term,
            until: Instant::now() + ms(3000),
        }),
        last_active_term: term,
        ..local(caps)
    }
}

/// This member standby, last active under `term`.
fn was_active(term: i64, caps: Capabilities) -> Local<'static> {
    Local {
        last_active_term: term,
        ..local(caps)
    }
}

/// Not ready (or an API server).
fn standing_back(local: Local<'static>) -> Local<'static> {
    Local {
        wants_lease: false,
        ..local
    }
}

#[test]
fn on_a_lease_view() {
    let t0 = Instant::now();
    let other = Some(("joc-1", OTHER_KEY));
    let mine = Some((ME, MY_KEY));
    let earlier_run = Some((ME, OTHER_KEY));
    let follow = |check_in: u64| Next::Follow {
        holder_key: Some(OTHER_KEY),
        check_at: t0 + ms(check_in) + TIMER_SLACK,
        steal: None,
    };
    let changed = Some("the lease changed hands");
    let acquire = |term| Next::Acquire { term };
    let release = |term| Next::StandBack {
        release: Some(term),
    };
    // (story, local facts, lease row: holder, term, expires in, renewed ago;
    //  expected demotion, expected next step)
    #[rustfmt::skip]
    let cases: Vec<(&str, Local<'static>, LeaseView, Option<&str>, Next)> = vec![
        ("acquire: a free lease is taken, term + 1",
            local(pg()), row(None, 4, 0, 900), None, acquire(4)),
        ("expire by database time: a named holder whose row expired is replaced",
            local(maria()), row(other, 4, -1, 5200), None, acquire(4)),
        ("a live holder is followed until its expiry by database time",
            local(lite()), row(other, 4, 1500, 300), None, follow(1500)),
        ("renew: our term confirmed, nothing to do",
            holding(5, pg()), row(mine, 5, 4000, 0), None, Next::Keep),
        ("the lease changed hands while active: demote first, then follow",
            holding(5, pg()), row(other, 6, 4000, 10), changed, follow(4000)),
        ("our row expired while active: demote, then acquire a new term",
            holding(5, lite()), row(mine, 5, 0, 5000), changed, acquire(5)),
        ("hand-over: a lease handed to us is confirmed under its term",
            was_active(5, maria()), row(mine, 7, 4900, 100), None, Next::Confirm { term: 7 }),
        ("still ours after a demotion: a new active period takes a new term",
            was_active(5, pg()), row(mine, 5, 3000, 2000), None, acquire(5)),
        ("our name with another session (an earlier run): followed like anyone else",
            local(pg()), row(earlier_run, 9, 2500, 100), None, follow(2500)),
        ("release: not ready while the row is ours, let others have it",
            standing_back(was_active(5, pg())), row(mine, 5, 3000, 100), None, release(5)),
        ("not ready (or an API server): stand back, release nothing",
            standing_back(local(lite())), row(other, 5, 3000, 100), None,
            Next::StandBack { release: None }),
        ("set not ready while active: the active period goes on until released",
            standing_back(holding(5, pg())), row(mine, 5, 3000, 100), None, Next::Keep),
        ("not ready and our term gone: demote, then release the row",
            standing_back(holding(4, pg())), row(mine, 5, 3000, 100), changed, release(5)),
    ];
    for (story, local, view, demote, next) in cases {
        let decision = on_view(&view, t0, &local);
        assert_eq!(decision.demote, demote, "{story}");
        assert_eq!(decision.next, next, "{story}");
        assert_eq!(
            decision.next.watch(),
            matches!(next, Next::Follow { .. }).then_some(OTHER_KEY),
            "{story}"
        );
    }
}

#[test]
fn early_take_over_after_the_holders_session_ended() {
    let t0 = Instant::now();
    let reported = t0 - ms(40);
    let held = Released {
        key: OTHER_KEY,
        observed_held: true,
    };
    let free_at_first_look = Released {
        key: OTHER_KEY,
        observed_held: false,
    };
    let other = Some(("joc-1", OTHER_KEY));
    let steal = |at: Instant| {
        Some(Steal {
            at,
            term: 4,
            key: OTHER_KEY,
            confirmed: false,
        })
    };
    // (story, caps, waiter's report, failed take-overs so far, holder's
    //  last renew (ms ago, database time), expected plan)
    #[rustfmt::skip]
    let cases = [
        ("PostgreSQL: the holder's session ended while watched, take over after the guard",
            pg(), Some(held), 0, 300, steal(reported + TAKEOVER_GUARD)),
        ("PostgreSQL: free at first look says nothing about when, only the TTL applies",
            pg(), Some(free_at_first_look), 0, 300, None),
        // hold (2 × 1 s) + margin (1 s) = 3 s after the renew, 1 s ago.
        ("MariaDB's two-renew bound: take over hold + margin after the last renew",
            maria(), Some(held), 0, 1000, steal(t0 + ms(2000) + TIMER_SLACK)),
        ("MariaDB: the statement checks the time, so a lock free at first look counts too",
            maria(), Some(free_at_first_look), 0, 3500, steal(t0 + TIMER_SLACK)),
        ("SQLite has no session locks: only the TTL",
            lite(), Some(held), 0, 300, None),
        ("no report from the waiter: only the TTL",
            pg(), None, 0, 300, None),
        ("after three failed take-overs of this holder: only the TTL",
            pg(), Some(held), MAX_REFUSED, 300, None),
    ];
    for (story, caps, released, steal_failures, renewed_age, expected) in cases {
        let local = Local {
            released: released.map(|r| (r, reported)),
            steal_failures,
            ..local(caps)
        };
        let decision = on_view(&row(other, 4, 4000, renewed_age), t0, &local);
        let Next::Follow { steal, .. } = decision.next else {
            panic!("{story}: {decision:?}");
        };
        assert_eq!(steal, expected, "{story}");
    }
}

#[test]
fn a_planned_take_over_lives_only_while_holder_and_term_stay() {
    let t0 = Instant::now();
    let planned = Steal {
        at: t0 + ms(200),
        term: 4,
        key: OTHER_KEY,
        confirmed: false,
    };
    let local = Local {
        steal: Some(planned),
        ..local(pg())
    };
    let kept = on_view(&row(Some(("joc-1", OTHER_KEY)), 4, 4000, 10), t0, &local);
    assert!(
        matches!(kept.next, Next::Follow { steal: Some(s), .. } if s == planned),
        "{kept:?}"
    );
    // The lease moved on to a new term: the plan goes.
    let dropped = on_view(&row(Some(("joc-1", OTHER_KEY)), 5, 4000, 10), t0, &local);
    assert!(
        matches!(dropped.next, Next::Follow { steal: None, .. }),
        "{dropped:?}"
    );
    // Another holder now: the plan goes, and the waiter watches the new one.
    let other = on_view(&row(Some(("joc-2", 99)), 4, 4000, 10), t0, &local);
    assert_eq!(other.next.watch(), Some(99));
    assert!(matches!(other.next, Next::Follow { steal: None, .. }));
}

#[test]
fn the_holders_deadline() {
    let sent = Instant::now();
    let timing = timing();
    // (story, caps, deadline after a renew sent at `sent`)
    #[rustfmt::skip]
    let cases = [
        ("PostgreSQL: ttl - margin", pg(), sent + ms(4000)),
        ("MariaDB's two-renew bound: also 2 × renew interval", maria(), sent + ms(2000)),
        ("SQLite: ttl - margin", lite(), sent + ms(4000)),
    ];
    for (story, caps, until) in cases {
        assert_eq!(valid_until(caps, &timing, sent), until, "{story}");
        // Failsafe-relevant: without a renew (database gone) the role lasts
        // exactly until the deadline, never past it.
        let active = Some(Active { term: 3, until });
        assert!(!deadline_passed(active, until - ms(1)), "{story}");
        assert!(deadline_passed(active, until), "{story}");
        assert!(deadline_passed(active, until + ms(1)), "{story}");
    }
    assert!(!deadline_passed(None, sent + ms(60_000)));
}

#[test]
fn after_a_renew() {
    let sent = Instant::now();
    let active = Active {
        term: 8,
        until: sent + ms(900),
    };
    let extend = |until_ms| {
        Renewed::Extend(Active {
            term: 8,
            until: sent + ms(until_ms),
        })
    };
    // (story, caps, renewed, answered after, expected)
    #[rustfmt::skip]
    let cases = [
        ("renew in time extends from the instant it was sent",
            pg(), true, ms(15), extend(4000)),
        ("MariaDB: the extension is bounded by two renew intervals",
            maria(), true, ms(15), extend(2000)),
        ("a renew answered after the deadline (database stalled) demotes",
            pg(), true, ms(900), Renewed::Demote("the renew succeeded only after the local deadline")),
        ("a refused renew demotes",
            lite(), false, ms(5), Renewed::Demote("the renew was refused: the lease changed hands")),
    ];
    for (story, caps, renewed, after, expected) in cases {
        let local = local(caps);
        assert_eq!(
            after_renew(renewed, active, sent, sent + after, &local),
            expected,
            "{story}"
        );
    }
}

#[test]
fn refused_acquires_reopen_the_session_after_three() {
    let now = Instant::now();
    assert_eq!(after_refused(1, now), Some(now + RETRY_AFTER_REFUSAL));
    assert_eq!(after_refused(2, now), Some(now + RETRY_AFTER_REFUSAL));
    assert_eq!(after_refused(MAX_REFUSED, now), None);
}

#[test]
fn when_a_standby_reads_the_lease() {
    let timing = timing();
    let (member, api) = (MemberKind::Member, MemberKind::ApiServer);
    // (story, caps, kind, ready, age of the last view, reads)
    #[rustfmt::skip]
    let cases = [
        ("PostgreSQL: the heartbeat answers; read only if the row was missing",
            pg(), member, true, Some(ms(10)), true),
        ("MariaDB: a fresh view is enough", maria(), member, true, Some(ms(4999)), false),
        ("MariaDB: once per TTL", maria(), member, true, Some(ms(5000)), true),
        ("MariaDB: never read yet", maria(), member, true, None, true),
        ("MariaDB: a member standing back reads every tick", maria(), member, false, Some(ms(1000)), true),
        ("MariaDB: an API server reads once per TTL", maria(), api, false, Some(ms(1000)), false),
    ];
    for (story, caps, kind, ready, age, reads) in cases {
        assert_eq!(
            standby_reads_lease(caps, kind, ready, age, &timing),
            reads,
            "{story}"
        );
    }
}

fn member(name: &str, kind: MemberKind, ready: bool, age_ms: u64, fresh: bool) -> MemberRow {
    MemberRow {
        member: name.to_owned(),
        kind,
        ready,
        heartbeat_age: Some(ms(age_ms)),
        fresh,
        holder: name == ME,
    }
}

#[test]
fn hand_over_targets() {
    let members = vec![
        member(ME, MemberKind::Member, true, 0, true),
        member("joc-1", MemberKind::Member, true, 700, true),
        member("joc-2", MemberKind::Member, true, 200, true),
        member("joc-3", MemberKind::Member, false, 100, true),
        member("joc-4", MemberKind::Member, true, 9000, false),
        member("joc-api-0", MemberKind::ApiServer, true, 50, true),
    ];
    let named = |name: &str| HandOverTarget::Member(name.to_owned());
    // (story, target, expected: Ok(member) or a word of the reason)
    #[rustfmt::skip]
    let cases: Vec<(&str, HandOverTarget, Result<&str, &str>)> = vec![
        ("a named ready member", named("joc-1"), Ok("joc-1")),
        ("any: the lowest ordinal, as the sidecar's check picks", HandOverTarget::Any, Ok("joc-1")),
        ("not a member of this cluster", named("joc-9"), Err("not a member")),
        ("not ready", named("joc-3"), Err("not ready for the lease")),
        ("stale heartbeat", named("joc-4"), Err("no fresh heartbeat")),
        ("an API server", named("joc-api-0"), Err("API server")),
        ("this member itself", named(ME), Err("already the active member")),
    ];
    for (story, target, expected) in cases {
        let got = hand_over_target(&members, ME, &target);
        match (got, expected) {
            (Ok(to), Ok(want)) => assert_eq!(to, want, "{story}"),
            (Err(HandOverOutcome::NoEligibleTarget { reason }), Err(word)) => {
                assert!(reason.contains(word), "{story}: {reason}");
            }
            (got, _) => panic!("{story}: {got:?}"),
        }
    }
    let alone = vec![members[0].clone(), members[3].clone(), members[5].clone()];
    let none = hand_over_target(&alone, ME, &HandOverTarget::Any);
    assert!(
        matches!(&none, Err(HandOverOutcome::NoEligibleTarget { reason }) if reason.contains("no standby")),
        "{none:?}"
    );
}

#[test]
fn kubernetes_word_lets_the_take_over_come_as_soon_as_the_session_ended() {
    let t0 = Instant::now();
    let reported = t0 - ms(40);
    let held = Released {
        key: OTHER_KEY,
        observed_held: true,
    };
    let free_at_first_look = Released {
        key: OTHER_KEY,
        observed_held: false,
    };
    let confirmed = |at: Instant| {
        Some(Steal {
            at,
            term: 4,
            key: OTHER_KEY,
            confirmed: true,
        })
    };
    let unconfirmed = |at: Instant| {
        Some(Steal {
            at,
            term: 4,
            key: OTHER_KEY,
            confirmed: false,
        })
    };
    let earlier_plan = Steal {
        at: t0 + ms(2000) + TIMER_SLACK,
        term: 4,
        key: OTHER_KEY,
        confirmed: false,
    };
    // (story, caps, waiter's report, Kubernetes' word (member, term), a plan
    //  made before, failed take-overs, expected plan); the holder renewed
    //  1 s ago by database time.
    #[rustfmt::skip]
    let cases = [
        ("MariaDB: no wait for hold + margin once the processes are gone",
            maria(), Some(held), Some(("joc-1", 4)), None, 0, confirmed(reported)),
        ("MariaDB: a lock free at first look counts too",
            maria(), Some(free_at_first_look), Some(("joc-1", 4)), None, 0, confirmed(reported)),
        ("the word supersedes a plan made before it",
            maria(), Some(held), Some(("joc-1", 4)), Some(earlier_plan), 0, confirmed(reported)),
        ("PostgreSQL: free at first look is enough with the word",
            pg(), Some(free_at_first_look), Some(("joc-1", 4)), None, 0, confirmed(reported)),
        ("a word about another term changes nothing",
            maria(), Some(held), Some(("joc-1", 3)), None, 0, unconfirmed(t0 + ms(2000) + TIMER_SLACK)),
        ("a word about another member changes nothing",
            maria(), Some(held), Some(("joc-2", 4)), None, 0, unconfirmed(t0 + ms(2000) + TIMER_SLACK)),
        ("the session must have ended too: no report, only the TTL",
            maria(), None, Some(("joc-1", 4)), None, 0, None),
        ("no session locks (SQLite): only the TTL",
            lite(), Some(held), Some(("joc-1", 4)), None, 0, None),
        ("after three failed take-overs: only the TTL",
            maria(), Some(held), Some(("joc-1", 4)), None, MAX_REFUSED, None),
    ];
    for (story, caps, released, gone, steal, steal_failures, expected) in cases {
        let local = Local {
            released: released.map(|r| (r, reported)),
            holder_gone: gone,
            steal,
            steal_failures,
            ..local(caps)
        };
        let decision = on_view(&row(Some(("joc-1", OTHER_KEY)), 4, 4000, 1000), t0, &local);
        let Next::Follow { steal, .. } = decision.next else {
            panic!("{story}: {decision:?}");
        };
        assert_eq!(steal, expected, "{story}");
    }
}
