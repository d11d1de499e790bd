//! Checks recorded lease histories: at most one active member at any instant,
//! and fencing terms strictly increasing in time.
//!
//! Input: the JSON lines the `lease-contender` processes write (one file per
//! process), plus the harness's own kill times, all on `CLOCK_MONOTONIC`
//! nanoseconds. A process is active from its `acquired` record until the
//! earliest of its `demoted` record, the last deadline (`until_ns`) it
//! recorded for that term, its kill time and the end of observation.

use std::path::Path;

pub mod group;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// One line of a contender's event file (fields the checker needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    pub event: String,
    #[serde(default)]
    pub member: String,
    #[serde(default)]
    pub term: Option<i64>,
    pub mono_ns: i64,
    #[serde(default)]
    pub until_ns: Option<i64>,
    /// Statements sent so far ("stats" records).
    #[serde(default)]
    pub statements: Option<u64>,
}

impl Record {
    pub fn new(event: &str, term: Option<i64>, mono_ns: i64, until_ns: Option<i64>) -> Record {
        Record {
            event: event.to_owned(),
            member: String::new(),
            term,
            mono_ns,
            until_ns,
            statements: None,
        }
    }
}

/// The records of one contender process.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// For messages, e.g. "c1#2".
    pub name: String,
    pub records: Vec<Record>,
    /// When the harness saw it dead after SIGKILL.
    pub killed_at_ns: Option<i64>,
}

/// One active period of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub instance: String,
    pub term: i64,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Reads an event file. A SIGKILL can cut the last line short; only that
/// line may be unreadable.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(error) => {
                bail!("{} line {}: {error}: {line}", path.display(), index + 1)
            }
        }
    }
    Ok(records)
}

/// The active periods of every instance.
pub fn active_periods(instances: &[Instance], observed_until_ns: i64) -> Result<Vec<Period>> {
    let mut periods = Vec::new();
    for instance in instances {
        // (term, start, latest deadline)
        let mut open: Option<(i64, i64, i64)> = None;
        for record in &instance.records {
            match record.event.as_str() {
                "acquired" => {
                    let term = record
                        .term
                        .with_context(|| format!("{}: acquired without term", instance.name))?;
                    let until = record
                        .until_ns
                        .with_context(|| format!("{}: acquired without until", instance.name))?;
                    if let Some((held, _, _)) = open {
                        bail!(
                            "{}: acquired term {term} while term {held} was still active",
                            instance.name
                        );
                    }
                    open = Some((term, record.mono_ns, until));
                }
                "renewed" => {
                    let Some((held, start, until)) = open else {
                        bail!(
                            "{}: renewed term {:?} while not active",
                            instance.name,
                            record.term
                        );
                    };
                    if record.term != Some(held) {
                        bail!(
                            "{}: renewed term {:?} while term {held} was active",
                            instance.name,
                            record.term
                        );
                    }
                    let renewed_until = record.until_ns.unwrap_or(until);
                    open = Some((held, start, until.max(renewed_until)));
                }
                "demoted" => {
                    if let Some((term, start, until)) = open.take() {
                        periods.push(Period {
                            instance: instance.name.clone(),
                            term,
                            start_ns: start,
                            end_ns: record.mono_ns.min(until),
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some((term, start, until)) = open {
            let end = until
                .min(instance.killed_at_ns.unwrap_or(i64::MAX))
                .min(observed_until_ns);
            periods.push(Period {
                instance: instance.name.clone(),
                term,
                start_ns: start,
                end_ns: end.max(start),
            });
        }
    }
    periods.sort_by_key(|p| (p.start_ns, p.end_ns));
    Ok(periods)
}

/// What the checker found wrong with a set of periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `later` started before `earlier` (the latest-ending one so far) ended.
    Overlap { earlier: Period, later: Period },
    /// `later` started after `earlier` with a term not greater than its.
    TermOrder { earlier: Period, later: Period },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Overlap {
                earlier: previous,
                later: period,
            } => write!(
                f,
                "two active at once: {} term {} [{}, {}] overlaps {} term {} [{}, {}] by {:.3} ms",
                previous.instance,
                previous.term,
                previous.start_ns,
                previous.end_ns,
                period.instance,
                period.term,
                period.start_ns,
                period.end_ns,
                (previous.end_ns.min(period.end_ns) - period.start_ns) as f64 / 1e6
            ),
            Violation::TermOrder {
                earlier: previous,
                later: period,
            } => write!(
                f,
                "terms not strictly increasing: {} term {} (from {}) follows {} term {} (from {})",
                period.instance,
                period.term,
                period.start_ns,
                previous.instance,
                previous.term,
                previous.start_ns
            ),
        }
    }
}

/// Every period that starts before an earlier one has ended, and every
/// period whose term does not exceed the earlier one's, in start order.
pub fn violations(periods: &[Period]) -> Vec<Violation> {
    let mut sorted: Vec<&Period> = periods.iter().collect();
    sorted.sort_by_key(|p| (p.start_ns, p.end_ns));
    let mut found = Vec::new();
    let mut latest: Option<&Period> = None;
    for period in sorted {
        if let Some(previous) = latest {
            if period.start_ns < previous.end_ns {
                found.push(Violation::Overlap {
                    earlier: previous.clone(),
                    later: period.clone(),
                });
            }
            if period.term <= previous.term {
                found.push(Violation::TermOrder {
                    earlier: previous.clone(),
                    later: period.clone(),
                });
            }
        }
        if latest.is_none_or(|l| period.end_ns >= l.end_ns) {
            latest = Some(period);
        }
    }
    found
}

/// At most one period at any instant; terms strictly increase with time.
pub fn check_periods(periods: &[Period]) -> Result<()> {
    match violations(periods).first() {
        Some(violation) => bail!("{violation}"),
        None => Ok(()),
    }
}

/// Builds the periods and checks them; returns the periods for reporting.
pub fn check_history(instances: &[Instance], observed_until_ns: i64) -> Result<Vec<Period>> {
    let periods = active_periods(instances, observed_until_ns)?;
    check_periods(&periods)?;
    Ok(periods)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn acquired(term: i64, at: i64, until: i64) -> Record {
        Record::new("acquired", Some(term), at * MS, Some(until * MS))
    }
    fn renewed(term: i64, at: i64, until: i64) -> Record {
        Record::new("renewed", Some(term), at * MS, Some(until * MS))
    }
    fn demoted(term: i64, at: i64) -> Record {
        Record::new("demoted", Some(term), at * MS, None)
    }
    fn instance(name: &str, records: Vec<Record>, killed_at: Option<i64>) -> Instance {
        Instance {
            name: name.to_owned(),
            records,
            killed_at_ns: killed_at.map(|k| k * MS),
        }
    }

    #[test]
    fn clean_handovers_pass() {
        let history = [
            instance(
                "a",
                vec![acquired(1, 0, 400), renewed(1, 100, 500), demoted(1, 450)],
                None,
            ),
            instance(
                "b",
                vec![
                    acquired(2, 460, 860),
                    demoted(2, 900),
                    acquired(4, 2000, 2400),
                ],
                None,
            ),
            // Killed while active: its period ends at the kill.
            instance("c", vec![acquired(3, 1000, 1400)], Some(1100)),
        ];
        let periods = check_history(&history, 2200 * MS).expect("no overlap");
        assert_eq!(periods.len(), 4);
        // b's first period ends at its deadline (860), not at the late demotion record.
        assert_eq!(periods[1].end_ns, 860 * MS);
        // The open period ends at the end of observation.
        assert_eq!(periods[3].end_ns, 2200 * MS);
    }

    #[test]
    fn overlapping_holders_fail() {
        let history = [
            instance("a", vec![acquired(1, 0, 400), renewed(1, 300, 700)], None),
            instance("b", vec![acquired(2, 600, 1000)], None),
        ];
        let error = check_history(&history, 2000 * MS).expect_err("a is active until 700");
        assert!(error.to_string().contains("two active at once"), "{error}");
    }

    #[test]
    fn frozen_holder_is_bounded_by_its_deadline_only() {
        // A frozen holder writes nothing; its last deadline bounds it. A
        // successor before that deadline is an overlap.
        let frozen = instance("a", vec![acquired(1, 0, 400), renewed(1, 100, 500)], None);
        let early = instance("b", vec![acquired(2, 450, 900)], None);
        assert!(check_history(&[frozen.clone(), early], 2000 * MS).is_err());
        let late = instance("b", vec![acquired(2, 510, 900)], None);
        check_history(&[frozen, late], 2000 * MS).expect("after the deadline");
    }

    #[test]
    fn kill_after_successor_start_fails() {
        let history = [
            instance("a", vec![acquired(1, 0, 400)], Some(300)),
            instance("b", vec![acquired(2, 250, 700)], None),
        ];
        assert!(check_history(&history, 2000 * MS).is_err());
    }

    #[test]
    fn reused_or_decreasing_terms_fail() {
        let reused = [
            instance("a", vec![acquired(3, 0, 400), demoted(3, 100)], None),
            instance("b", vec![acquired(3, 200, 600), demoted(3, 300)], None),
        ];
        let error = check_history(&reused, 2000 * MS).expect_err("term 3 twice");
        assert!(error.to_string().contains("strictly increasing"), "{error}");
        let decreasing = [
            instance("a", vec![acquired(5, 0, 400), demoted(5, 100)], None),
            instance("b", vec![acquired(4, 200, 600)], None),
        ];
        assert!(check_history(&decreasing, 2000 * MS).is_err());
    }

    #[test]
    fn overlap_with_an_earlier_long_period_is_found() {
        // b lies inside a's period, c starts after b ended but before a did.
        let history = [
            instance("a", vec![acquired(1, 0, 1000)], None),
            instance("b", vec![acquired(2, 100, 200), demoted(2, 200)], None),
            instance("c", vec![acquired(3, 300, 400)], None),
        ];
        assert!(check_history(&history, 2000 * MS).is_err());
    }

    #[test]
    fn inconsistent_records_are_reported() {
        let double = [instance(
            "a",
            vec![acquired(1, 0, 400), acquired(2, 100, 500)],
            None,
        )];
        assert!(check_history(&double, 2000 * MS).is_err());
        let stray = [instance("a", vec![renewed(1, 0, 400)], None)];
        assert!(check_history(&stray, 2000 * MS).is_err());
    }

    #[test]
    fn reads_files_with_a_cut_last_line() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"event\":\"acquired\",\"term\":1,\"mono_ns\":5,\"until_ns\":9,\"member\":\"a\"}\n{\"event\":\"ren",
        )?;
        let records = read_records(&path)?;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].term, Some(1));
        std::fs::write(&path, "garbage\n{\"event\":\"x\",\"mono_ns\":1}\n")?;
        assert!(read_records(&path).is_err());
        Ok(())
    }
}
