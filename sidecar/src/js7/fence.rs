//! Fencing: stop this pod's JOC JVM at once (SIGKILL) and confirm it is
//! gone. The JVM is found by its command line, which carries
//! `-Djetty.base=<JETTY_BASE>`; with the pod's `shareProcessNamespace: true`
//! only this pod's processes are visible, and the sidecar runs with JOC's
//! uid so it may signal the JVM without an added capability. Which JOC is
//! fenced when is decided in `crate::decide::fence` (pure).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid, getpgrp};

/// The JVM's command-line marker (the image starts Jetty with it; an
/// assumption, see README "Fencing").
pub const JETTY_BASE_MARKER: &str = "-Djetty.base=";

/// How long a SIGKILLed JVM may take to disappear (or become a zombie).
pub const CONFIRM_BOUND: Duration = Duration::from_secs(5);

/// What a fence did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// No JVM with this JETTY_BASE runs: nothing to stop.
    NoJvm,
    /// These pids were SIGKILLed and are gone (or zombies). `groups`: the
    /// JVM's container's process groups, SIGKILLed too if `ended` (so that
    /// the container ends), else left running.
    Killed {
        pids: Vec<i32>,
        groups: Vec<i32>,
        ended: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(
        "cannot signal JOC's JVM (pid {pid}): {source}; the sidecar must run with the JOC image's uid (1001) in a pod with shareProcessNamespace: true (the operator sets both)"
    )]
    Permission { pid: i32, source: Errno },
    #[error("sending SIGKILL to JOC's JVM (pid {pid}) failed: {source}")]
    Signal { pid: i32, source: Errno },
    #[error(
        "JOC's JVM (pid {pid}) is still running {bound:?} after SIGKILL; it may be stuck in the kernel (D state): look at the node"
    )]
    NotGone { pid: i32, bound: Duration },
    #[error("reading {dir}: {source}")]
    Proc {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `cmdline` (NUL-separated, as /proc/<pid>/cmdline) names a JVM of
/// `jetty_base`; trailing slashes do not matter.
pub fn is_jvm_of(cmdline: &[u8], jetty_base: &str) -> bool {
    let want = jetty_base.trim_end_matches('/');
    cmdline.split(|b| *b == 0).any(|arg| {
        std::str::from_utf8(arg)
            .ok()
            .and_then(|a| a.strip_prefix(JETTY_BASE_MARKER))
            .is_some_and(|base| base.trim_end_matches('/') == want)
    })
}

/// The pids under `proc_root` (normally `/proc`) whose command line names a
/// JVM of `jetty_base`, zombies left out (they run nothing).
pub fn find_jvms(proc_root: &Path, jetty_base: &str) -> Result<Vec<i32>, FenceError> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| FenceError::Proc {
        dir: proc_root.to_path_buf(),
        source,
    })?;
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            // A process that ended meanwhile has no cmdline: skipped.
            std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
                .is_ok_and(|c| is_jvm_of(&c, jetty_base))
        })
        .filter(|pid| !is_gone(proc_root, *pid))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// No such process, or a zombie (dead, waiting for its parent to reap it).
pub fn is_gone(proc_root: &Path, pid: i32) -> bool {
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
    }
}

/// SIGKILLs every JVM of `jetty_base` and waits up to `bound` until each is
/// gone. A frozen (SIGSTOPped) JVM dies too: SIGKILL needs no cooperation.
/// `end_container`: its container's process groups die with it; otherwise
/// they are returned, to be ended later with [`end_groups`].
pub async fn fence_jvm(
    proc_root: &Path,
    jetty_base: &str,
    bound: Duration,
    end_container: bool,
) -> Result<Fenced, FenceError> {
    let pids = find_jvms(proc_root, jetty_base)?;
    if pids.is_empty() {
        return Ok(Fenced::NoJvm);
    }
    // The container's process group, read before the JVM dies: the image's
    // entrypoint keeps its container alive after the JVM died (fact 3), so
    // only its liveness probe (a minute) would restart it; with every
    // process of the group gone the container ends and the kubelet starts
    // it anew at once, JOC back as a standby in the time of its start.
    let own_group = getpgrp();
    let mut groups: Vec<i32> = pids
        .iter()
        .filter_map(|&pid| getpgid(Some(Pid::from_raw(pid))).ok())
        .filter(|&group| is_other_container_group(group, own_group))
        .map(Pid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    // Best effort, the group first (its main process must not see the JVM
    // end and exit by itself first): the JVM is what must die; a group
    // that cannot be signalled leaves the container to its liveness probe.
    let ended = end_container;
    if end_container {
        groups = end_groups(&groups);
    }
    for &pid in &pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source @ Errno::EPERM) => return Err(FenceError::Permission { pid, source }),
            Err(source) => return Err(FenceError::Signal { pid, source }),
        }
    }
    let deadline = tokio::time::Instant::now() + bound;
    for &pid in &pids {
        while !is_gone(proc_root, pid) {
            if tokio::time::Instant::now() >= deadline {
                return Err(FenceError::NotGone { pid, bound });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(Fenced::Killed {
        pids,
        groups,
        ended,
    })
}

/// SIGKILLs the process groups `groups` (never the pod's init nor this
/// process's own); returns those signalled. A group already gone is
/// skipped.
pub fn end_groups(groups: &[i32]) -> Vec<i32> {
    let own_group = getpgrp();
    groups
        .iter()
        .copied()
        .filter(|&group| is_other_container_group(Pid::from_raw(group), own_group))
        .filter(|&group| killpg(Pid::from_raw(group), Signal::SIGKILL).is_ok())
        .collect()
}

/// A process group the fence may end: not the pod's init (pid 1, the pause
/// process with `shareProcessNamespace`) and not the sidecar's own.
fn is_other_container_group(group: Pid, own: Pid) -> bool {
    group.as_raw() > 1 && group != own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_must_name_this_jetty_base_exactly() {
        let base = "/var/sos-berlin.com/js7/joc";
        let cmd = |args: &[&str]| args.join("\0").into_bytes();
        assert!(is_jvm_of(
            &cmd(&[
                "java",
                "-Xmx256m",
                "-Djetty.base=/var/sos-berlin.com/js7/joc",
                "-jar",
                "start.jar"
            ]),
            base
        ));
        assert!(is_jvm_of(
            &cmd(&["java", "-Djetty.base=/var/sos-berlin.com/js7/joc/"]),
            base
        ));
        assert!(!is_jvm_of(
            &cmd(&["java", "-Djetty.base=/var/sos-berlin.com/js7/joc2"]),
            base
        ));
        assert!(!is_jvm_of(
            &cmd(&["sh", "-c", "grep -Djetty.base= x"]),
            base
        ));
        assert!(!is_jvm_of(&cmd(&["tail", "-f", "/dev/null"]), base));
        assert!(!is_jvm_of(b"", base));
    }

    #[tokio::test]
    async fn a_frozen_process_with_the_marker_is_killed_and_confirmed_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("jetty-base");
        let marker = format!("{JETTY_BASE_MARKER}{}", base.display());
        // sh -c puts its $0 (the marker) in its argv; a loop keeps sh itself running.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "while :; do sleep 0.1; done", &marker])
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let mut other = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "while :; do sleep 0.1; done",
                "-Djetty.base=/elsewhere",
            ])
            .spawn()
            .expect("spawn");
        let other_pid = other.id() as i32;
        // Killed even if an assertion fails.
        let guard = KillOnDrop(vec![pid, other_pid]);
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
        let base_str = base.to_str().expect("utf8");
        // A child sh forks for `sleep` carries the marker until it execs.
        let found = find_jvms(Path::new("/proc"), base_str).expect("find");
        assert!(found.contains(&pid), "{found:?}");
        assert!(!found.contains(&other_pid), "{found:?}");
        let fenced = fence_jvm(Path::new("/proc"), base_str, CONFIRM_BOUND, true)
            .await
            .expect("fence");
        assert!(
            matches!(&fenced, Fenced::Killed { pids, groups, .. } if pids.contains(&pid) && groups.is_empty()),
            "{fenced:?}"
        );
        // Not reaped yet: a zombie counts as gone.
        assert!(is_gone(Path::new("/proc"), pid));
        let status = child.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        settle(base_str).await;
        assert_eq!(
            fence_jvm(Path::new("/proc"), base_str, CONFIRM_BOUND, true)
                .await
                .expect("fence"),
            Fenced::NoJvm
        );
        assert!(
            !is_gone(Path::new("/proc"), other_pid),
            "the other JVM lives"
        );
        drop(guard);
        let _ = other.wait();
    }

    /// A container as a kubelet starts one: its main process (no marker,
    /// its own process group) waits for its JVM child (the marker), then
    /// lives on without it as the image's entrypoint does (fact 3). The
    /// child, its main pid, and the JVM pids found.
    async fn container_with_jvm(base: &Path) -> (std::process::Child, i32, Vec<i32>) {
        use std::os::unix::process::CommandExt as _;
        let marker = format!("{JETTY_BASE_MARKER}{}", base.display());
        let container = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "/bin/sh -c 'while :; do sleep 0.1; done' \"$M\" & wait; while :; do sleep 0.1; done",
            ])
            .env("M", &marker)
            .process_group(0)
            .spawn()
            .expect("spawn");
        let main_pid = container.id() as i32;
        let base_str = base.to_str().expect("utf8");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = find_jvms(Path::new("/proc"), base_str).expect("find");
            if !found.is_empty() {
                break found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the JVM child did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!found.contains(&main_pid), "{found:?}");
        (container, main_pid, found)
    }

    #[tokio::test]
    async fn the_jvms_container_ends_with_it_but_never_the_sidecars_group() {
        use std::os::unix::process::ExitStatusExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("jetty-base");
        let (mut container, main_pid, found) = container_with_jvm(&base).await;
        let guard = KillOnDrop(vec![main_pid]);
        let base_str = base.to_str().expect("utf8");
        let fenced = fence_jvm(Path::new("/proc"), base_str, CONFIRM_BOUND, true)
            .await
            .expect("fence");
        assert_eq!(
            fenced,
            Fenced::Killed {
                pids: found,
                groups: vec![main_pid],
                ended: true,
            }
        );
        let status = container.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "the container's main process ended"
        );
        drop(guard);
        // The test's own processes share the test runner's group: the
        // earlier test's fence left that group alone (the guard).
        assert!(!is_other_container_group(getpgrp(), getpgrp()));
        assert!(!is_other_container_group(Pid::from_raw(1), getpgrp()));
    }

    #[tokio::test]
    async fn a_container_left_running_by_the_fence_is_ended_later() {
        use std::os::unix::process::ExitStatusExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("jetty-base");
        let (mut container, main_pid, found) = container_with_jvm(&base).await;
        let guard = KillOnDrop(vec![main_pid]);
        let base_str = base.to_str().expect("utf8");
        let fenced = fence_jvm(Path::new("/proc"), base_str, CONFIRM_BOUND, false)
            .await
            .expect("fence");
        assert_eq!(
            fenced,
            Fenced::Killed {
                pids: found,
                groups: vec![main_pid],
                ended: false,
            }
        );
        // The JVM is gone, its container lives on (as the image's does).
        assert_eq!(container.try_wait().expect("try_wait"), None);
        assert_eq!(
            end_groups(&[main_pid, 1, getpgrp().as_raw()]),
            vec![main_pid]
        );
        let status = container.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "ended later");
        drop(guard);
    }

    struct KillOnDrop(Vec<i32>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for pid in &self.0 {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }

    /// Until no process of `base` is left (orphaned `sleep 0.1`s end by themselves).
    async fn settle(base: &str) {
        for _ in 0..100 {
            if find_jvms(Path::new("/proc"), base).is_ok_and(|p| p.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
