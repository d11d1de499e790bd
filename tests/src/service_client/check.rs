//! What a client behind the Service saw, judged (pure): answers served by a
//! member that did not hold the lease term it answered under, and the gap
//! the client saw at each change of term.
//!
//! Times are CLOCK_MONOTONIC nanoseconds of this host (the client, the
//! lease observer and every container share it).

use std::time::Duration;

use serde::Serialize;

/// What a stand-in cockpit answered (`GET /`, see `standin-cockpit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub member: String,
    /// `active` or `standby`.
    pub role: String,
    /// The term it acts under; `None` when standby.
    pub term: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    /// Connection refused or reset, timeout, a non-200 status, a bad body.
    Error(String),
}

/// One request of the client, sent and answered (or failed) on the host's
/// monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub sent_ns: i64,
    pub received_ns: i64,
    pub outcome: Outcome,
}

impl Request {
    /// Member and term of an answer that served as active.
    pub fn served(&self) -> Option<(&str, i64)> {
        match &self.outcome {
            Outcome::Answer(a) if a.role == joc_ha_crds::names::ROLE_ACTIVE => {
                a.term.map(|t| (a.member.as_str(), t))
            }
            _ => None,
        }
    }
}

/// One look at the lease row: who held it validly (holder, term) at some
/// instant between `sent_ns` and `received_ns`; `None`: nobody (no holder,
/// or its lease expired by the database's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSample {
    pub sent_ns: i64,
    pub received_ns: i64,
    pub holder: Option<(String, i64)>,
}

/// A member's holding of one term, widened to what the looks allow: from
/// the look before the first that showed it (it may have begun just after
/// that one) to the look after the last (it may have lasted until just
/// before that one). Unbounded at the ends of observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub member: String,
    pub term: i64,
    pub from_ns: i64,
    pub to_ns: i64,
}

/// The holdings seen in `samples` (in the order they were taken).
pub fn holdings(samples: &[LeaseSample]) -> Vec<Holding> {
    let mut out: Vec<Holding> = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        let Some((member, term)) = &sample.holder else {
            continue;
        };
        let previous = index.checked_sub(1).map(|i| &samples[i]);
        if previous.is_some_and(|p| p.holder == sample.holder) {
            continue;
        }
        let end = samples[index..]
            .iter()
            .position(|s| s.holder != sample.holder)
            .map_or(i64::MAX, |offset| samples[index + offset].received_ns);
        out.push(Holding {
            member: member.clone(),
            term: *term,
            from_ns: previous.map_or(i64::MIN, |p| p.sent_ns),
            to_ns: end,
        });
    }
    out
}

/// A served answer the lease does not back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NonHolderAnswer {
    pub member: String,
    pub term: i64,
    pub sent_ns: i64,
    pub received_ns: i64,
    /// Who held that term by the lease row (may be the same member: then
    /// the answer fell outside its holding).
    pub holders: Vec<String>,
}

/// What the client's requests add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub requests: usize,
    /// Answers as active, backed by the lease.
    pub served: usize,
    /// Answers saying standby (a stale route; nothing was served).
    pub standby: usize,
    pub errors: usize,
    /// Answers as active by a member that did not hold that term during
    /// the request: must be none.
    pub by_non_holder: Vec<NonHolderAnswer>,
    /// Answers as active under a term no look at the lease saw (too short
    /// for the observer to judge): must be none too, or the judgement is blind.
    pub unjudged: usize,
}

/// Judges every request: an answer as active from member M under term T
/// during [sent, received] is backed iff the lease showed M holding T at
/// some instant of that interval (within the looks' resolution).
pub fn judge(requests: &[Request], holdings: &[Holding]) -> Judgement {
    let mut judgement = Judgement {
        requests: requests.len(),
        ..Judgement::default()
    };
    for request in requests {
        match (&request.outcome, request.served()) {
            (_, Some((member, term))) => {
                let of_term: Vec<&Holding> = holdings.iter().filter(|h| h.term == term).collect();
                if of_term.is_empty() {
                    judgement.unjudged += 1;
                } else if of_term.iter().any(|h| {
                    h.member == member
                        && h.from_ns <= request.received_ns
                        && request.sent_ns <= h.to_ns
                }) {
                    judgement.served += 1;
                } else {
                    judgement.by_non_holder.push(NonHolderAnswer {
                        member: member.to_owned(),
                        term,
                        sent_ns: request.sent_ns,
                        received_ns: request.received_ns,
                        holders: of_term.iter().map(|h| h.member.clone()).collect(),
                    });
                }
            }
            (Outcome::Answer(_), None) => judgement.standby += 1,
            (Outcome::Error(_), None) => judgement.errors += 1,
        }
    }
    judgement
}

/// A change of the term the client's answers came under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handover {
    pub from_member: String,
    pub from_term: i64,
    pub to_member: String,
    pub to_term: i64,
    /// When the last answer under the old term arrived.
    pub last_old_ns: i64,
    /// When the first answer under the new term arrived.
    pub first_new_ns: i64,
    /// The client-visible gap: `first_new_ns - last_old_ns` (0 if they overlap).
    pub gap_ms: f64,
}

/// The client-visible gaps: for each term the answers came under, in term
/// order, from the last answer of the term before to the first of this one.
pub fn handovers(requests: &[Request]) -> Vec<Handover> {
    // term -> (member, first received, last received)
    let mut terms: std::collections::BTreeMap<i64, (String, i64, i64)> = Default::default();
    for request in requests {
        if let Some((member, term)) = request.served() {
            let entry = terms.entry(term).or_insert((
                member.to_owned(),
                request.received_ns,
                request.received_ns,
            ));
            entry.1 = entry.1.min(request.received_ns);
            entry.2 = entry.2.max(request.received_ns);
        }
    }
    let terms: Vec<(i64, (String, i64, i64))> = terms.into_iter().collect();
    terms
        .windows(2)
        .map(|pair| {
            let (from_term, (from_member, _, last_old_ns)) = &pair[0];
            let (to_term, (to_member, first_new_ns, _)) = &pair[1];
            let gap_ns = first_new_ns.saturating_sub(*last_old_ns).max(0);
            Handover {
                from_member: from_member.clone(),
                from_term: *from_term,
                to_member: to_member.clone(),
                to_term: *to_term,
                last_old_ns: *last_old_ns,
                first_new_ns: *first_new_ns,
                gap_ms: Duration::from_nanos(gap_ns.unsigned_abs()).as_secs_f64() * 1e3,
            }
        })
        .collect()
}

/// The nearest-rank percentile `p` (0–100) of `values`; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sent: i64, received: i64, member: &str, role: &str, term: Option<i64>) -> Request {
        Request {
            sent_ns: sent,
            received_ns: received,
            outcome: Outcome::Answer(Answer {
                member: member.to_owned(),
                role: role.to_owned(),
                term,
            }),
        }
    }

    fn active(sent: i64, received: i64, member: &str, term: i64) -> Request {
        answer(sent, received, member, "active", Some(term))
    }

    fn error(sent: i64, received: i64) -> Request {
        Request {
            sent_ns: sent,
            received_ns: received,
            outcome: Outcome::Error("connection refused".to_owned()),
        }
    }

    fn look(sent: i64, holder: Option<(&str, i64)>) -> LeaseSample {
        LeaseSample {
            sent_ns: sent,
            received_ns: sent + 2,
            holder: holder.map(|(m, t)| (m.to_owned(), t)),
        }
    }

    /// a holds term 1 (seen at 0..20), nobody at 30, b holds 2 from 40 on.
    fn switch() -> Vec<LeaseSample> {
        vec![
            look(0, Some(("a", 1))),
            look(10, Some(("a", 1))),
            look(20, Some(("a", 1))),
            look(30, None),
            look(40, Some(("b", 2))),
            look(50, Some(("b", 2))),
        ]
    }

    #[test]
    fn holdings_widen_to_the_neighbouring_looks() {
        assert_eq!(
            holdings(&switch()),
            vec![
                Holding {
                    member: "a".into(),
                    term: 1,
                    from_ns: i64::MIN,
                    to_ns: 32
                },
                Holding {
                    member: "b".into(),
                    term: 2,
                    from_ns: 30,
                    to_ns: i64::MAX
                },
            ]
        );
    }

    #[test]
    fn an_answer_is_backed_iff_its_member_held_its_term_during_the_request() {
        let held = holdings(&switch());
        // (request, served, standby, errors, by a non-holder, unjudged)
        let table = [
            (active(5, 8, "a", 1), 1, 0, 0, 0, 0),
            // The request began before a's holding ended (32 at the latest).
            (active(31, 35, "a", 1), 1, 0, 0, 0, 0),
            // Sent after the look that showed a gone: a no longer held term 1.
            (active(33, 36, "a", 1), 0, 0, 0, 1, 0),
            // b never held term 1.
            (active(5, 8, "b", 1), 0, 0, 0, 1, 0),
            // a never held term 2, b did.
            (active(45, 48, "a", 2), 0, 0, 0, 1, 0),
            (active(45, 48, "b", 2), 1, 0, 0, 0, 0),
            // b's term 2 cannot have begun before the look at 30.
            (active(10, 29, "b", 2), 0, 0, 0, 1, 0),
            (answer(45, 48, "a", "standby", None), 0, 1, 0, 0, 0),
            (error(45, 48), 0, 0, 1, 0, 0),
            // Term 3 was never seen: not judged.
            (active(45, 48, "b", 3), 0, 0, 0, 0, 1),
        ];
        for (request, served, standby, errors, non_holder, unjudged) in table {
            let j = judge(std::slice::from_ref(&request), &held);
            assert_eq!(
                (
                    j.served,
                    j.standby,
                    j.errors,
                    j.by_non_holder.len(),
                    j.unjudged
                ),
                (served, standby, errors, non_holder, unjudged),
                "{request:?}"
            );
            assert_eq!(j.requests, 1);
        }
    }

    #[test]
    fn the_gap_runs_from_the_last_old_answer_to_the_first_new_one() {
        let requests = vec![
            active(0, 1_000_000, "a", 1),
            active(20_000_000, 21_000_000, "a", 1),
            error(40_000_000, 41_000_000),
            answer(60_000_000, 61_000_000, "a", "standby", None),
            active(80_000_000, 86_000_000, "b", 2),
            active(100_000_000, 101_000_000, "b", 2),
            // A crash of b, back to a under a new term.
            active(300_000_000, 301_000_000, "a", 3),
        ];
        let moves = handovers(&requests);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert_eq!(
            (moves[0].from_member.as_str(), moves[0].to_member.as_str()),
            ("a", "b")
        );
        assert_eq!(
            (moves[0].last_old_ns, moves[0].first_new_ns),
            (21_000_000, 86_000_000)
        );
        assert!((moves[0].gap_ms - 65.0).abs() < 1e-9, "{moves:?}");
        assert_eq!((moves[1].from_term, moves[1].to_term), (2, 3));
        assert!((moves[1].gap_ms - 200.0).abs() < 1e-9, "{moves:?}");
    }

    #[test]
    fn overlapping_answers_of_two_terms_make_no_negative_gap() {
        let requests = vec![active(0, 50, "a", 1), active(10, 20, "b", 2)];
        assert_eq!(handovers(&requests)[0].gap_ms, 0.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
