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
        let line = serde_json::json!({
            "member": state.member,
            "event": event,
            "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
            "pid": std::process::id(),
        });
        if let Some(file) = &mut state.periods {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Appends one record to a periods file (the format [`Services`] writes),
/// for an end the stand-in's services cannot record themselves: the JVM
/// killed inside the container, or the whole process killed by the harness.
pub fn append_period_record(path: &Path, member: &str, event: &str) -> Result<()> {
    let line = serde_json::json!({
        "member": member,
        "event": event,
        "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
        "pid": std::process::id(),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening periods file {}", path.display()))?;
    writeln!(file, "{line}")?;
    Ok(())
}
