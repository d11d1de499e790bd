//! Teardown and the sweep of left-overs, one code path for both: a live node's
//! Drop, a network's Drop, and the start of a later run that finds what a
//! killed run left (keyed by the slot's name prefix, see `plan.rs`). And the
//! check that nothing is left, which the tests assert.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::plan::{CGROUP_PARENT, SWEPT_HIERARCHIES, contains, in_scope};

/// How long killing the processes of a scope may take before teardown goes on.
const KILL_TIMEOUT: Duration = Duration::from_secs(15);

/// What a scope may have created: names starting with `scope`, these dirs
/// (state dirs, slot dir; mounts below them), and root addresses in `blocks`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    pub scope: String,
    pub dirs: Vec<PathBuf>,
    pub blocks: Vec<(Ipv4Addr, u8)>,
}

/// Runs a command to completion; the error carries its stderr.
pub(super) fn run<I, S>(program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = std::process::Command::new(program);
    command.args(args).stdin(std::process::Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !output.status.success() {
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn cgroup_base(hierarchy: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(CGROUP_PARENT)
}

/// Our cgroup dirs in `scope`, every hierarchy, deepest first.
fn cgroup_dirs(scope: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut out = Vec::new();
    for hierarchy in SWEPT_HIERARCHIES {
        let Ok(entries) = std::fs::read_dir(cgroup_base(hierarchy)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if in_scope(&name, scope) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &mut out);
            }
        }
    }
    out
}

fn mentions(text: &str, dirs: &[PathBuf]) -> bool {
    dirs.iter()
        .any(|d| text.contains(d.to_string_lossy().as_ref()))
}

/// Processes of the scope: in one of its cgroups, or with one of its dirs on
/// the command line (a daemon that never got into its cgroup, a shim).
fn processes(footprint: &Footprint) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let cgroup_marker = format!("/{CGROUP_PARENT}/");
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let in_our_cgroup = cgroups.lines().any(|line| {
            line.split_once(&cgroup_marker).is_some_and(|(_, rest)| {
                in_scope(rest.split('/').next().unwrap_or(""), &footprint.scope)
            })
        });
        if in_our_cgroup || mentions(&cmdline, &footprint.dirs) {
            out.push((pid, cmdline.trim().to_owned()));
        }
    }
    out
}

/// Mount points (of this mount namespace) below the scope's dirs, deepest first.
fn mounts(footprint: &Footprint) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|point| footprint.dirs.iter().any(|d| point.starts_with(d)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Links of the root network namespace in the scope.
fn root_links(scope: &str) -> Vec<String> {
    run("ip", ["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| in_scope(name, scope))
        .collect()
}

/// Root namespace IPv4 addresses inside `blocks`.
fn root_addresses(blocks: &[(Ipv4Addr, u8)]) -> Vec<String> {
    run("ip", ["-o", "-4", "addr", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let device = words.nth(1)?.to_owned();
            let address = words.nth(1)?;
            let ip: Ipv4Addr = address.split('/').next()?.parse().ok()?;
            blocks
                .iter()
                .any(|&b| contains(b, ip))
                .then(|| format!("{address} on {device}"))
        })
        .collect()
}

impl Footprint {
    /// Everything of the scope still there, one line each; empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (pid, cmdline) in processes(self) {
            out.push(format!("process {pid}: {cmdline}"));
        }
        for point in mounts(self) {
            out.push(format!("mount {}", point.display()));
        }
        for dir in cgroup_dirs(&self.scope) {
            out.push(format!("cgroup {}", dir.display()));
        }
        for link in root_links(&self.scope) {
            out.push(format!("link {link} in the root network namespace"));
        }
        for address in root_addresses(&self.blocks) {
            out.push(format!("address {address}"));
        }
        for dir in &self.dirs {
            if dir.exists() {
                out.push(format!("dir {}", dir.display()));
            }
        }
        out
    }

    /// Removes everything of the scope, in order: processes (frozen ones
    /// thawed first; containers, shims, daemons), mounts (namespace files: the
    /// namespaces and the mounts inside them go with the last reference),
    /// root links, cgroups, dirs. Best effort: returns what it could not do.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for dir in cgroup_dirs(&self.scope) {
            if dir.starts_with("/sys/fs/cgroup/freezer") {
                let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            }
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let left = processes(self);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                problems.extend(
                    left.iter()
                        .map(|(pid, cmd)| format!("process {pid} survived SIGKILL: {cmd}")),
                );
                break;
            }
            for (pid, _) in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for point in mounts(self) {
            if let Err(error) = run("umount", [&point]) {
                // Busy (a process in another namespace still uses it): detach.
                if let Err(lazy) = run("umount", [Path::new("-l"), &point]) {
                    problems.push(format!("{error:#}; lazily: {lazy:#}"));
                }
            }
        }
        for link in root_links(&self.scope) {
            if let Err(error) = run("ip", ["link", "del", &link]) {
                problems.push(format!("{error:#}"));
            }
        }
        // Emptied cgroups can be removed a moment after their last task exits.
        for dir in cgroup_dirs(&self.scope) {
            let mut result = std::fs::remove_dir(&dir);
            let until = Instant::now() + Duration::from_secs(5);
            while result.as_ref().is_err_and(|e| e.raw_os_error() == Some(16))
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(50));
                result = std::fs::remove_dir(&dir);
            }
            if let Err(error) = result
                && error.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("removing cgroup {}: {error}", dir.display()));
            }
        }
        for hierarchy in SWEPT_HIERARCHIES {
            // Shared by every slot: removed when the last one is gone.
            let _ = std::fs::remove_dir(cgroup_base(hierarchy));
        }
        for dir in &self.dirs {
            if let Err(error) = std::fs::remove_dir_all(dir)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("removing {}: {error}", dir.display()));
            }
        }
        problems
    }
}

/// `pid starttime` of this process, written into a slot's owner file.
pub fn owner_line() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name in parentheses (field 2).
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19).map(str::to_owned)
}

/// Whether an owner line names a live process (the same one: a reused pid
/// has another start time).
pub fn owner_alive(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(pid), Some(start)) = (words.next(), words.next()) else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .and_then(start_time)
        .is_some_and(|now| now == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        for (field, path) in [
            ("/tmp/a", "/tmp/a"),
            ("/tmp/a\\040b", "/tmp/a b"),
            ("/tmp/x\\134y", "/tmp/x\\y"),
            ("/tmp/end\\", "/tmp/end\\"),
        ] {
            assert_eq!(unescape_mount_path(field), PathBuf::from(path), "{field}");
        }
    }

    #[test]
    fn this_process_is_an_owner_alive_and_a_dead_or_reused_pid_is_not() {
        assert!(owner_alive(&owner_line()));
        let pid = std::process::id();
        for line in [
            format!("{pid} 1"),
            format!("{pid}"),
            String::new(),
            "4194305 1".to_owned(),
        ] {
            assert!(!owner_alive(&line), "{line:?}");
        }
    }
}
