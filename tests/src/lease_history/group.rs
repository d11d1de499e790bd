//! A group of `lease-contender` processes against one database, with fault
//! injection (SIGKILL, SIGSTOP/SIGCONT, release, hand-over) and the records
//! the checker needs. Used by the lease tests and the lease benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::{Instance, Period, Record, check_history, read_records};
use crate::process::{ManagedProcess, ProcessSignal};

/// `CLOCK_MONOTONIC` in nanoseconds (the contenders' clock).
pub fn monotonic_ns() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => now.tv_sec() * 1_000_000_000 + now.tv_nsec(),
        Err(_) => 0,
    }
}

/// How to start a contender: the program and arguments before its own flags.
#[derive(Debug, Clone)]
pub struct ContenderCommand {
    pub program: PathBuf,
    pub prefix_args: Vec<String>,
}

/// Lease timing given to every contender.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl_ms: u64,
    pub renew_ms: u64,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        ttl_ms: 5000,
        renew_ms: 1000,
    };

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// libfaketime's preload library from Debian's `faketime`/`libfaketime` package.
pub fn libfaketime() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from(
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    )];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates.push(PathBuf::from("/usr/lib/faketime/libfaketime.so.1"));
    candidates.into_iter().find(|p| p.exists())
}

/// The environment that sets a process's wall clock an hour ahead
/// (libfaketime), its monotonic clock untouched.
pub fn clock_an_hour_ahead() -> Result<Vec<(String, String)>> {
    let library =
        libfaketime().context("libfaketime not found: install the Debian package faketime")?;
    Ok(vec![
        ("LD_PRELOAD".to_owned(), library.display().to_string()),
        ("FAKETIME".to_owned(), "+1h".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
    ])
}

struct Live {
    name: String,
    process: ManagedProcess,
    events: PathBuf,
    frozen: bool,
    /// When it was last thawed: a thawed process needs a moment to catch up.
    thawed_ns: i64,
}

/// The processes of one test or benchmark case.
pub struct Group {
    dir: PathBuf,
    command: ContenderCommand,
    url_file: PathBuf,
    timing: Timing,
    cluster: String,
    live: BTreeMap<String, Live>,
    done: Vec<Instance>,
    started: u32,
    extra_args: Vec<String>,
}

/// What a live contender last recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub term: i64,
    pub until_ns: i64,
}

impl Group {
    /// `dir` receives the URL file (mode 0600), event files and logs.
    pub fn new(dir: &Path, command: ContenderCommand, url: &str, timing: Timing) -> Result<Group> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(dir)?;
        let url_file = dir.join("database-url");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&url_file)?;
        file.write_all(url.as_bytes())?;
        Ok(Group {
            dir: dir.to_path_buf(),
            command,
            url_file,
            timing,
            cluster: "lease-test".to_owned(),
            live: BTreeMap::new(),
            done: Vec::new(),
            started: 0,
            extra_args: Vec::new(),
        })
    }

    /// Extra flags for contenders started from now on (e.g. `--no-migrate`).
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| (*a).to_owned()).collect();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts member `member` (a new process; its earlier one must be gone).
    /// With `faketime`, its wall clock runs an hour ahead (libfaketime,
    /// monotonic clock untouched).
    pub fn spawn(&mut self, member: &str, faketime: bool) -> Result<()> {
        if self.live.contains_key(member) {
            bail!("{member} is already running");
        }
        self.started += 1;
        let name = format!("{member}#{}", self.started);
        let events = self.dir.join(format!("{name}.events.jsonl"));
        let log = self.dir.join(format!("{name}.log"));
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.prefix_args)
            .arg("--url-file")
            .arg(&self.url_file)
            .args(["--cluster", &self.cluster, "--member", member])
            .args(["--ttl-ms", &self.timing.ttl_ms.to_string()])
            .args(["--renew-ms", &self.timing.renew_ms.to_string()])
            .arg("--events")
            .arg(&events)
            .args(&self.extra_args)
            .env("RUST_LOG", "info,joc_ha_sidecar=debug");
        if faketime {
            command.envs(clock_an_hour_ahead()?);
        }
        let process = ManagedProcess::spawn(command, &log)?;
        self.live.insert(
            member.to_owned(),
            Live {
                name,
                process,
                events,
                frozen: false,
                thawed_ns: 0,
            },
        );
        Ok(())
    }

    pub fn members(&self) -> Vec<String> {
        self.live.keys().cloned().collect()
    }

    pub fn is_live(&self, member: &str) -> bool {
        self.live.contains_key(member)
    }

    pub fn is_frozen(&self, member: &str) -> bool {
        self.live.get(member).is_some_and(|l| l.frozen)
    }

    /// The records of the live process of `member`.
    pub fn records(&self, member: &str) -> Result<Vec<Record>> {
        match self.live.get(member) {
            Some(live) => read_records(&live.events),
            None => Ok(Vec::new()),
        }
    }

    pub fn log_tail(&self, member: &str, lines: usize) -> String {
        self.live
            .get(member)
            .map(|l| l.process.log_tail(lines))
            .unwrap_or_default()
    }

    pub fn log_path(&self, member: &str) -> Option<PathBuf> {
        self.live
            .get(member)
            .map(|l| l.process.log_path().to_path_buf())
    }

    pub fn exit_status(&self, member: &str) -> Option<std::process::ExitStatus> {
        self.live.get(member).and_then(|l| l.process.exit_status())
    }

    /// Live, unfrozen members other than the current holders that have been
    /// connected for at least `settled` (so they watch the holder).
    pub fn settled_standbys(&self, settled: Duration) -> Result<Vec<String>> {
        let holders: Vec<String> = self.holders()?.into_iter().map(|(m, _)| m).collect();
        let limit = monotonic_ns() - i64::try_from(settled.as_nanos()).unwrap_or(i64::MAX);
        let mut ready = Vec::new();
        for (member, live) in &self.live {
            if live.frozen || live.thawed_ns > limit || holders.contains(member) {
                continue;
            }
            let records = self.records(member)?;
            let connected = records
                .iter()
                .rev()
                .find(|r| r.event == "connected" || r.event == "disconnected")
                .is_some_and(|r| r.event == "connected" && r.mono_ns <= limit);
            // After a release it stands back until it rejoins.
            let competing = records
                .iter()
                .rev()
                .find(|r| r.event == "released" || r.event == "rejoined")
                .is_none_or(|r| r.event == "rejoined" && r.mono_ns <= limit);
            if connected && competing {
                ready.push(member.clone());
            }
        }
        Ok(ready)
    }

    /// Whether `member`'s records say it is active now.
    pub fn holding(&self, member: &str) -> Result<Option<Holding>> {
        let records = self.records(member)?;
        let mut holding = None;
        for record in &records {
            match record.event.as_str() {
                "acquired" | "renewed" => {
                    holding = record
                        .term
                        .zip(record.until_ns)
                        .map(|(term, until_ns)| Holding { term, until_ns });
                }
                "demoted" => holding = None,
                _ => {}
            }
        }
        Ok(holding.filter(|h| h.until_ns > monotonic_ns()))
    }

    /// The members whose records say they are active now.
    pub fn holders(&self) -> Result<Vec<(String, Holding)>> {
        let mut holders = Vec::new();
        for member in self.live.keys() {
            if let Some(holding) = self.holding(member)? {
                holders.push((member.clone(), holding));
            }
        }
        Ok(holders)
    }

    /// The first `acquired` record after `after_ns` by a member other than
    /// `except`: (member, term, when).
    pub fn acquired_after(
        &self,
        after_ns: i64,
        except: Option<&str>,
    ) -> Result<Option<(String, i64, i64)>> {
        let mut first: Option<(String, i64, i64)> = None;
        for member in self.live.keys() {
            if Some(member.as_str()) == except {
                continue;
            }
            for record in self.records(member)? {
                if record.event == "acquired" && record.mono_ns > after_ns {
                    let term = record.term.unwrap_or(0);
                    if first.as_ref().is_none_or(|(_, _, at)| record.mono_ns < *at) {
                        first = Some((member.clone(), term, record.mono_ns));
                    }
                    break;
                }
            }
        }
        Ok(first)
    }

    /// Waits until someone other than `except` acquires after `after_ns`.
    pub async fn wait_acquired_after(
        &self,
        after_ns: i64,
        except: Option<&str>,
        timeout: Duration,
    ) -> Result<(String, i64, i64)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.acquired_after(after_ns, except)? {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "nobody{} acquired the lease within {timeout:?}; holders now: {:?}; logs:\n{}",
                    except.map(|e| format!(" but {e}")).unwrap_or_default(),
                    self.holders()?,
                    self.all_log_tails(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for exactly one holder and returns it.
    pub async fn wait_single_holder(&self, timeout: Duration) -> Result<(String, Holding)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let holders = self.holders()?;
            if holders.len() == 1 {
                return holders.into_iter().next().context("one holder");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no single holder within {timeout:?}: {holders:?}; logs:\n{}",
                    self.all_log_tails(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `member` has recorded `event` (at or after `after_ns`).
    pub async fn wait_event(
        &self,
        member: &str,
        event: &str,
        after_ns: i64,
        timeout: Duration,
    ) -> Result<Record> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(record) = self
                .records(member)?
                .into_iter()
                .find(|r| r.event == event && r.mono_ns >= after_ns)
            {
                return Ok(record);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{member} did not record {event:?} within {timeout:?}; log:\n{}",
                    self.log_tail(member, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL; returns (sent_ns, dead_ns). The process's records end here.
    pub async fn kill(&mut self, member: &str) -> Result<(i64, i64)> {
        let live = self
            .live
            .remove(member)
            .with_context(|| format!("{member} is not running"))?;
        let sent = monotonic_ns();
        live.process.kill().await?;
        let dead = monotonic_ns();
        self.done.push(Instance {
            name: live.name,
            records: read_records(&live.events)?,
            killed_at_ns: Some(dead),
        });
        Ok((sent, dead))
    }

    /// SIGTERM and wait (the contender releases the lease and records its
    /// demotion).
    pub async fn stop(&mut self, member: &str) -> Result<()> {
        let live = self
            .live
            .remove(member)
            .with_context(|| format!("{member} is not running"))?;
        if live.frozen {
            live.process.thaw()?;
        }
        let end = live.process.terminate(Duration::from_secs(15)).await?;
        let dead = monotonic_ns();
        self.done.push(Instance {
            name: live.name,
            records: read_records(&live.events)?,
            killed_at_ns: end.forced.then_some(dead),
        });
        Ok(())
    }

    /// SIGSTOP; returns when sent.
    pub fn freeze(&mut self, member: &str) -> Result<i64> {
        let live = self
            .live
            .get_mut(member)
            .with_context(|| format!("{member} is not running"))?;
        let sent = monotonic_ns();
        live.process.freeze()?;
        live.frozen = true;
        Ok(sent)
    }

    pub fn thaw(&mut self, member: &str) -> Result<()> {
        let live = self
            .live
            .get_mut(member)
            .with_context(|| format!("{member} is not running"))?;
        live.process.thaw()?;
        live.frozen = false;
        live.thawed_ns = monotonic_ns();
        Ok(())
    }

    /// Sends a signal (SIGUSR1: release, SIGUSR2: hand over); returns when sent.
    pub fn signal(&self, member: &str, signal: ProcessSignal) -> Result<i64> {
        let live = self
            .live
            .get(member)
            .with_context(|| format!("{member} is not running"))?;
        let sent = monotonic_ns();
        live.process.signal(signal)?;
        Ok(sent)
    }

    /// The last `lines` log lines of every live contender.
    pub fn all_log_tails(&self, lines: usize) -> String {
        self.live
            .iter()
            .map(|(member, live)| format!("--- {member}:\n{}", live.process.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Thaws and kills everything, then checks the whole history.
    pub async fn finish(mut self) -> Result<Vec<Period>> {
        let members: Vec<String> = self.live.keys().cloned().collect();
        for member in &members {
            if self.is_frozen(member) {
                self.thaw(member)?;
            }
        }
        for member in &members {
            self.kill(member).await?;
        }
        let observed_until = monotonic_ns();
        check_history(&self.done, observed_until).with_context(|| {
            format!(
                "lease history check failed; event files and logs in {}",
                self.dir.display()
            )
        })
    }
}
