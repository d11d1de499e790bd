//! What the sidecar tells the cockpit container: its role, the lease term
//! (fencing token) and the instant until which an active role holds.
//!
//! The deadline is given on CLOCK_MONOTONIC, which every container of a pod
//! shares (one kernel), so a cockpit whose sidecar died stops acting as
//! active by itself once `valid_until_monotonic_ns` has passed. It is also
//! given as wall-clock time, for people only.
//!
//! The deadline alone outlives a crashed sidecar by up to a TTL, while a
//! standby may take over at once (its database session ended). So the
//! sidecar also holds a lock on `role.lock` in the same folder for as long
//! as it lives ([`claim`]); the kernel drops it the moment the process dies.
//! A consumer acts only while [`writer_alive`] too: it stops as soon as its
//! sidecar is gone, and never acts on a report a dead sidecar left behind
//! (a restarted cockpit container finds the old file in the emptyDir).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// File name of the role inside the role folder.
pub const ROLE_FILE: &str = "role.json";

/// The file whose lock the living sidecar holds, next to the role file.
pub const LOCK_FILE: &str = "role.lock";

/// The role lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RoleLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Writes `standby` as the role, then takes the role lock (waiting for
/// consumers' brief checks): from here on consumers know a sidecar lives,
/// and the report they see is this one's.
pub fn claim(dir: &Path, standby: &RoleReport) -> std::io::Result<RoleLock> {
    write_role_file(dir, standby)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map(RoleLock)
        .map_err(|(_, errno)| std::io::Error::from(errno))
}

/// Whether a sidecar holds the role lock of `dir` now; `false` if nobody
/// does or it cannot be told (a consumer then acts as standby).
pub fn writer_alive(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        // We got it: nobody holds it exclusively. Dropping unlocks.
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The role as published in the role file and at `GET /role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleReport {
    /// `active` or `standby`.
    pub role: String,
    /// Lease term of the active role; absent for standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    pub member: String,
    pub cluster: String,
    /// CLOCK_MONOTONIC nanoseconds until which the active role holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_monotonic_ns: Option<u64>,
    /// The same deadline in wall-clock time (RFC 3339), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// When this report was made (RFC 3339).
    pub since: String,
}

impl RoleReport {
    pub fn standby(member: &str, cluster: &str) -> RoleReport {
        RoleReport {
            role: joc_ha_crds::names::ROLE_STANDBY.to_owned(),
            term: None,
            member: member.to_owned(),
            cluster: cluster.to_owned(),
            valid_until_monotonic_ns: None,
            valid_until: None,
            since: jiff::Timestamp::now().to_string(),
        }
    }

    /// Active with `term` for `remaining` from now.
    pub fn active(member: &str, cluster: &str, term: i64, remaining: Duration) -> RoleReport {
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(remaining).unwrap_or_default())
            .map(|t| t.to_string())
            .ok();
        RoleReport {
            role: joc_ha_crds::names::ROLE_ACTIVE.to_owned(),
            term: Some(term),
            member: member.to_owned(),
            cluster: cluster.to_owned(),
            valid_until_monotonic_ns: Some(
                monotonic_now_ns().saturating_add(remaining.as_nanos() as u64),
            ),
            valid_until: until,
            since: jiff::Timestamp::now().to_string(),
        }
    }

    /// Whether a consumer may act as active now, by the monotonic deadline.
    pub fn is_active_now(&self) -> bool {
        self.role == joc_ha_crds::names::ROLE_ACTIVE
            && self
                .valid_until_monotonic_ns
                .is_some_and(|until| monotonic_now_ns() < until)
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: comparable across the processes of
/// one host (and so of one pod).
pub fn monotonic_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        // CLOCK_MONOTONIC always exists on Linux; 0 makes any deadline pass.
        Err(_) => 0,
    }
}

/// Writes the role file atomically: readers see the old or the new report,
/// never a torn one.
pub fn write_role_file(dir: &Path, report: &RoleReport) -> std::io::Result<PathBuf> {
    let path = dir.join(ROLE_FILE);
    let temporary = dir.join(format!(".{ROLE_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}

/// Reads a role file (for the cockpit side and tests).
pub fn read_role_file(dir: &Path) -> std::io::Result<RoleReport> {
    let bytes = std::fs::read(dir.join(ROLE_FILE))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_role_expires_by_itself() {
        let report = RoleReport::active("joc-0", "joc", 7, Duration::from_millis(50));
        assert!(report.is_active_now());
        let expired = RoleReport {
            valid_until_monotonic_ns: Some(monotonic_now_ns().saturating_sub(1)),
            ..report
        };
        assert!(!expired.is_active_now());
        assert!(!RoleReport::standby("joc-0", "joc").is_active_now());
    }

    #[test]
    fn the_lock_tells_whether_the_sidecar_lives() {
        let dir = std::env::temp_dir().join(format!("joc-ha-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(!writer_alive(&dir), "no lock file: no sidecar");
        write_role_file(
            &dir,
            &RoleReport::active("joc-1", "joc", 3, Duration::from_secs(4)),
        )
        .expect("write");
        let lock = claim(&dir, &RoleReport::standby("joc-1", "joc")).expect("claim");
        assert!(writer_alive(&dir));
        assert!(writer_alive(&dir), "a check does not take the lock away");
        assert_eq!(read_role_file(&dir).expect("read").role, "standby");
        drop(lock);
        assert!(!writer_alive(&dir), "released with its holder");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// Found by the fault campaign: a restarted cockpit container read the
    /// killed sidecar's still-valid active report from the emptyDir while
    /// PostgreSQL had already handed the lease on. The deadline alone said
    /// "active"; the role lock says nobody writes it any more.
    #[test]
    fn a_restarted_cockpit_does_not_act_on_a_dead_sidecars_role_file() {
        let dir = std::env::temp_dir().join(format!("joc-ha-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let lock = claim(&dir, &RoleReport::standby("joc-1", "joc")).expect("claim");
        let left_behind = RoleReport::active("joc-1", "joc", 3, Duration::from_secs(30));
        write_role_file(&dir, &left_behind).expect("write");
        drop(lock); // the sidecar is killed
        let found = read_role_file(&dir).expect("read");
        assert!(found.is_active_now(), "the deadline alone would say active");
        assert!(
            !writer_alive(&dir),
            "but its writer is gone: act as standby"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_role_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("joc-ha-role-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let report = RoleReport::active("joc-1", "joc", 3, Duration::from_secs(4));
        write_role_file(&dir, &report).expect("write");
        assert_eq!(read_role_file(&dir).expect("read"), report);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
