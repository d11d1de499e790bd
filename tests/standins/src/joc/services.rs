//! The active member's services and their periods file

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

/// The stand-in's "active member services": a flag, a log line per change,
/// and optionally a periods file (JSON lines
/// `{"member","event":"start"|"stop","mono_ns"}`, CLOCK_MONOTONIC), shared by
/// the cluster loop and the REST handler (AMH's `active`).
#[derive(Clone)]
pub struct Services(Arc<std::sync::Mutex<ServicesState>>);

struct ServicesState {
    member: String,
    active: bool,
    periods: Option<std::fs::File>,
}

impl Services {
    pub fn new(member: &str, periods_file: Option<&Path>) -> Result<Services> {
        let periods = match periods_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening periods file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Services(Arc::new(std::sync::Mutex::new(ServicesState {
            member: member.to_owned(),
            active: false,
            periods,
        }))))
    }

    pub fn is_active(&self) -> bool {
        self.0.lock().map(|s| s.active).unwrap_or(false)
    }

    pub(super) fn set(&self, active: bool, why: &str) {
        let Ok(mut state) = self.0.lock() else { return };
        if state.active == active {
            return;
        }
        state.active = active;
        let event = if active { "start" } else { "stop" };
        tracing::info!(member = %state.member, "[services][{event}]{why}");
        let member = state.member.clone();
        if let Some(file) = &mut state.periods {
            let _ = write_record(file, &member, event);
        }
    }
}

/// Writes one record as a single `write` on a file opened for appending:
/// the stand-in, its JVM and the JVM's witness append to the same file, and
/// a line written in pieces interleaves with theirs (a CI run read
/// `..."pid"{:14112}` when the stand-in and the witness both noted a kill).
fn write_record(file: &mut std::fs::File, member: &str, event: &str) -> std::io::Result<()> {
    let mut line = serde_json::json!({
        "member": member,
        "event": event,
        "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
        "pid": std::process::id(),
    })
    .to_string();
    line.push('\n');
    file.write_all(line.as_bytes())
}

/// Appends one record to a periods file (the format [`Services`] writes),
/// for an end the stand-in's services cannot record themselves: the JVM
/// killed inside the container, or the whole process killed by the harness.
pub fn append_period_record(path: &Path, member: &str, event: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening periods file {}", path.display()))?;
    write_record(&mut file, member, event)
        .with_context(|| format!("appending to periods file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_appending_at_once_leave_whole_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("joc-0.joc.jsonl");
        let writers: Vec<_> = (0..4)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        append_period_record(&path, &format!("joc-{n}"), "killed").expect("append");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        let text = std::fs::read_to_string(&path).expect("read back");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for line in lines {
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {line:?} is not one record: {e}"));
            assert_eq!(record["event"], "killed");
        }
    }
}
