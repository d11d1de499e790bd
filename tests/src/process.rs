//! Local processes owned by a test: own process group, output appended to a log
//! file, killed (with their whole group) when dropped.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

pub use nix::sys::signal::Signal as ProcessSignal;

/// How long `kill()` and `Drop` wait for a SIGKILLed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a process ended after [`ManagedProcess::terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminated {
    pub status: ExitStatus,
    /// The grace period ran out and the process was SIGKILLed.
    pub forced: bool,
}

/// A child process in its own process group. Signals go to the whole group, so
/// `sh -c '...'` wrappers and their children are stopped, continued and killed
/// together.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: Pid,
    log_path: PathBuf,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// The command line for a log: program, arguments with any URL's password
/// masked, and only the names of the variables set (their values may be
/// credentials: the database password reaches the sidecar that way).
fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&mask_url_password(&arg.to_string_lossy()));
    }
    let names: Vec<String> = command
        .get_envs()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() {
        line.push_str(&format!(" (env set: {})", names.join(", ")));
    }
    line
}

/// `scheme://user:secret@host` → `scheme://user:***@host`; anything else as is.
fn mask_url_password(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return arg.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &arg[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => arg.to_owned(),
    }
}

impl ManagedProcess {
    /// Starts `program args...` with its stdout and stderr appended to `log_path`.
    pub fn start<I, S>(
        program: impl AsRef<OsStr>,
        args: I,
        log_path: impl AsRef<Path>,
    ) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn(command, log_path)
    }

    /// Spawns a prepared command (env, cwd, args already set). Its stdin, stdout,
    /// stderr and process group are set here.
    pub fn spawn(mut command: Command, log_path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let log_path = log_path.as_ref().to_path_buf();
        let name = Path::new(command.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| command.get_program().to_string_lossy().into_owned());
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening log {}", log_path.display()))?;
        let _ = writeln!(
            log,
            "=== {} starting: {} ===",
            now_rfc3339(),
            describe(&command)
        );
        let stderr = log.try_clone().context("duplicating log handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // The parent is the dedicated waiter thread below, which lives as long as
                // the child, so the child dies with the test process but not before.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        let thread_name = format!("wait-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = spawned_tx.send(Err(error));
                        return;
                    }
                };
                let pid = child.id();
                let _ = spawned_tx.send(Ok(pid));
                let status = child.wait().unwrap_or_else(|error| {
                    eprintln!("joc-ha-tests: waiting for pid {pid} failed: {error}");
                    ExitStatus::from_raw(255 << 8)
                });
                let _ = exit_tx.send(Some(status));
            })
            .context("starting waiter thread")?;
        let pid = spawned_rx
            .recv()
            .context("waiter thread died before spawning")?
            .with_context(|| format!("spawning {name} (log {})", log_path.display()))?;
        let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        Ok(Self {
            name,
            pid,
            log_path,
            exit: exit_rx,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of this process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// True until the process has exited and been reaped (a frozen process is running).
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Sends `signal` to the process group. Signalling an exited process is not an error.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        match killpg(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(error) => Err(error)
                .with_context(|| format!("sending {signal} to {} ({})", self.name, self.pid)),
        }
    }

    /// SIGSTOP to the whole group: the process and its children (a
    /// container's JVM) stay alive but do nothing, as under a cgroup freezer
    /// (a hung node, a paused VM).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGKILL (works on frozen processes too) and wait until reaped.
    pub async fn kill(&self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        match self.wait_exit(REAP_TIMEOUT).await {
            Some(status) => Ok(status),
            None => bail!(
                "{} ({}) still not reaped {REAP_TIMEOUT:?} after SIGKILL",
                self.name,
                self.pid
            ),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn terminate(&self, grace: Duration) -> anyhow::Result<Terminated> {
        if let Some(status) = self.exit_status() {
            return Ok(Terminated {
                status,
                forced: false,
            });
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(status) = self.wait_exit(grace).await {
            return Ok(Terminated {
                status,
                forced: false,
            });
        }
        let status = self.kill().await?;
        Ok(Terminated {
            status,
            forced: true,
        })
    }

    /// The exit status, or `None` if the process is still running after `timeout`.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }

    /// Waits without bound for the process to exit.
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        loop {
            if let Some(status) = *exit.borrow_and_update() {
                return status;
            }
            if exit.changed().await.is_err() {
                // The waiter thread always publishes before it ends; this is a last resort.
                return exit
                    .borrow()
                    .unwrap_or_else(|| ExitStatus::from_raw(255 << 8));
            }
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // The whole group, even if the leader is gone: orphaned children stay in it.
        let _ = killpg(self.pid, Signal::SIGKILL);
        if !self.is_running() {
            return;
        }
        // Drop cannot await; the waiter thread reaps within milliseconds.
        let deadline = Instant::now() + REAP_TIMEOUT;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// "exit code 3" or "signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(name) => format!("signal {signal} ({name})"),
            Err(_) => format!("signal {signal}"),
        }
    } else {
        format!("{status}")
    }
}

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn freeze_thaw_terminate_and_log() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("p.log");
        let process = ManagedProcess::start(
            "/bin/sh",
            [
                "-c",
                "trap 'echo bye; exit 3' TERM; echo hello; while :; do sleep 0.05; done",
            ],
            &log,
        )?;
        // Signals before the trap is installed would kill the shell outright.
        crate::wait::wait_for(
            "the trap to be installed",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async {
                process
                    .log_tail(5)
                    .lines()
                    .any(|line| line == "hello")
                    .then_some(())
            },
        )
        .await?;
        assert!(process.is_running());
        process.freeze()?;
        assert!(
            process
                .wait_exit(Duration::from_millis(200))
                .await
                .is_none()
        );
        process.thaw()?;
        let terminated = process.terminate(Duration::from_secs(10)).await?;
        assert!(!terminated.forced, "{terminated:?}");
        assert_eq!(
            terminated.status.code(),
            Some(3),
            "{} {}",
            describe_exit(terminated.status),
            process.log_tail(20)
        );
        assert!(
            process.log_tail(5).contains("hello"),
            "{}",
            process.log_tail(5)
        );
        Ok(())
    }

    #[tokio::test]
    async fn terminate_escalates_to_sigkill() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let process = ManagedProcess::start(
            "/bin/sh",
            [
                "-c",
                "trap '' TERM; echo ignoring; while :; do sleep 0.05; done",
            ],
            dir.path().join("p.log"),
        )?;
        crate::wait::wait_for(
            "the trap to be installed",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async {
                process
                    .log_tail(5)
                    .lines()
                    .any(|line| line == "ignoring")
                    .then_some(())
            },
        )
        .await?;
        let terminated = process.terminate(Duration::from_millis(300)).await?;
        assert!(terminated.forced);
        assert_eq!(describe_exit(terminated.status), "signal 9 (SIGKILL)");
        Ok(())
    }

    /// A container is frozen as a whole: its children stop too (the JOC
    /// stand-in's JVM is a child of the container process).
    #[tokio::test]
    async fn freeze_stops_the_children_too() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pid_file = dir.path().join("child.pid");
        let process = ManagedProcess::start(
            "/bin/sh",
            [
                "-c",
                &format!("sleep 1000 & echo $! > {}; wait", pid_file.display()),
            ],
            dir.path().join("p.log"),
        )?;
        let child: i32 = crate::wait::wait_for(
            "the child's pid",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() },
        )
        .await?;
        let state = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().chars().next())
                })
                .flatten()
        };
        process.freeze()?;
        crate::wait::wait_for(
            "both stopped",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async {
                (state(child) == Some('T') && state(process.pid().as_raw()) == Some('T'))
                    .then_some(())
            },
        )
        .await?;
        process.thaw()?;
        crate::wait::wait_for(
            "the child runs again",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async { (state(child) == Some('S')).then_some(()) },
        )
        .await?;
        drop(process);
        assert!(
            state(child).is_none_or(|s| s == 'Z'),
            "killed with the group"
        );
        Ok(())
    }

    #[tokio::test]
    async fn drop_kills_frozen_process_group() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let process =
            ManagedProcess::start("/bin/sh", ["-c", "sleep 1000"], dir.path().join("p.log"))?;
        let pid = process.pid();
        process.freeze()?;
        drop(process);
        // Reaped by the waiter thread before drop returned, so the pid is gone.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        Ok(())
    }
}

#[cfg(test)]
mod log_line_tests {
    use super::*;

    #[test]
    fn the_start_line_names_variables_but_shows_no_secret() {
        let mut command = Command::new("joc-ha-sidecar");
        command
            .args([
                "--database-url",
                "postgres://joc:s3cret@db:5432/joc?sslmode=require",
            ])
            .env("JOC_HA_DATABASE_PASSWORD", "s3cret");
        let line = describe(&command);
        assert!(!line.contains("s3cret"), "{line}");
        assert!(
            line.contains("postgres://joc:***@db:5432/joc?sslmode=require"),
            "{line}"
        );
        assert!(line.contains("env set: JOC_HA_DATABASE_PASSWORD"), "{line}");
        assert_eq!(
            mask_url_password("http://127.0.0.1:4446/x@y"),
            "http://127.0.0.1:4446/x@y"
        );
        assert_eq!(
            mask_url_password("sqlite:///tmp/a.db"),
            "sqlite:///tmp/a.db"
        );
    }
}
