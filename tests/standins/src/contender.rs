//! A lease contender for tests and benchmarks: runs the sidecar's lease
//! elector against a database and appends one JSON line per event to a file.
//! It plays the workload: it treats itself as active exactly from the role
//! change it observes until the role's deadline or the next demotion.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds (system-wide, comparable across
//! processes and unaffected by libfaketime with
//! `FAKETIME_DONT_FAKE_MONOTONIC=1`).
//!
//! Signals: SIGTERM stops (releasing the lease), SIGUSR1 releases and rejoins
//! once someone else holds the lease, SIGUSR2 hands over to the best standby.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use joc_ha_sidecar::lease::{
    Elector, ElectorHandle, ElectorStatus, HandOverTarget, LeaseConfig, MemberKind, Role,
};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

/// A request to end the active period now (reason, acknowledgement).
type Stop = (&'static str, oneshot::Sender<()>);

#[derive(Debug, Parser)]
#[command(
    name = "lease-contender",
    about = "Runs the joc-ha lease elector and records events"
)]
struct Args {
    /// Database URL (postgres://, mysql://, sqlite://).
    #[arg(long, env = "JOC_HA_LEASE_URL", hide_env_values = true)]
    url: Option<String>,
    /// File holding the database URL (keeps the password off command lines).
    #[arg(long, env = "JOC_HA_LEASE_URL_FILE", conflicts_with = "url")]
    url_file: Option<PathBuf>,
    #[arg(long, default_value = "test-cluster")]
    cluster: String,
    #[arg(long)]
    member: String,
    /// member or api-server.
    #[arg(long, default_value = "member")]
    kind: String,
    #[arg(long, default_value_t = 5000)]
    ttl_ms: u64,
    #[arg(long, default_value_t = 1000)]
    renew_ms: u64,
    /// Do not apply the schema migrations.
    #[arg(long)]
    no_migrate: bool,
    /// Append events here (JSON lines); default stdout.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Seconds between "stats" events.
    #[arg(long, default_value_t = 2)]
    stats_every_s: u64,
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => now.tv_sec() * 1_000_000_000 + now.tv_nsec(),
        Err(_) => 0,
    }
}

/// Converts Tokio instants to `CLOCK_MONOTONIC` nanoseconds (both read the
/// same clock; the pair below fixes the offset to within microseconds).
#[derive(Clone, Copy)]
struct Clock {
    base_instant: std::time::Instant,
    base_ns: i64,
}

impl Clock {
    fn new() -> Clock {
        let base_instant = std::time::Instant::now();
        let base_ns = monotonic_ns();
        Clock {
            base_instant,
            base_ns,
        }
    }

    fn ns(&self, instant: tokio::time::Instant) -> i64 {
        let instant = instant.into_std();
        match instant.checked_duration_since(self.base_instant) {
            Some(after) => self.base_ns + i64::try_from(after.as_nanos()).unwrap_or(i64::MAX / 2),
            None => {
                let before = self.base_instant.duration_since(instant);
                self.base_ns - i64::try_from(before.as_nanos()).unwrap_or(i64::MAX / 2)
            }
        }
    }
}

struct Events {
    out: Mutex<Box<dyn std::io::Write + Send>>,
    member: String,
    pid: u32,
}

impl Events {
    fn open(path: Option<&PathBuf>, member: &str) -> std::io::Result<Events> {
        let out: Box<dyn std::io::Write + Send> = match path {
            Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
            None => Box::new(std::io::stdout()),
        };
        Ok(Events {
            out: Mutex::new(out),
            member: member.to_owned(),
            pid: std::process::id(),
        })
    }

    fn emit(&self, event: &str, mut fields: Value) {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), json!(event));
            map.insert("member".into(), json!(self.member));
            map.insert("pid".into(), json!(self.pid));
            map.entry("mono_ns")
                .or_insert_with(|| json!(monotonic_ns()));
        }
        let mut line = fields.to_string();
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: O_APPEND keeps lines whole across processes.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Entry point of `lease-contender`, also used by `bench-lease contender ...`.
pub fn contender_main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lease-contender: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let events = match Events::open(args.events.as_ref(), &args.member) {
        Ok(events) => Arc::new(events),
        Err(error) => {
            eprintln!("lease-contender: cannot open the events file: {error}");
            return ExitCode::from(1);
        }
    };
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    events.emit("started", json!({ "wall_ms": wall_ms }));
    let Some(kind) = MemberKind::parse(&args.kind) else {
        tracing::error!(kind = %args.kind, "unknown member kind: use member or api-server");
        events.emit("fatal", json!({ "message": "unknown member kind" }));
        return ExitCode::from(2);
    };
    let mut config = LeaseConfig::new(&args.cluster, &args.member);
    config.kind = kind;
    config.ttl = Duration::from_millis(args.ttl_ms);
    config.renew_interval = Duration::from_millis(args.renew_ms);
    config.migrate = !args.no_migrate;
    let url = match (&args.url, &args.url_file) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(url) => url.trim().to_owned(),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read the URL file");
                events.emit("fatal", json!({ "message": "cannot read the URL file" }));
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            tracing::error!("give the database URL with --url or --url-file");
            events.emit("fatal", json!({ "message": "no URL" }));
            return ExitCode::from(2);
        }
    };
    let (handle, role) = match Elector::start(config, &url) {
        Ok(started) => started,
        Err(error) => {
            tracing::error!(%error, "cannot start the lease elector");
            events.emit("fatal", json!({ "message": error.to_string() }));
            return ExitCode::from(2);
        }
    };
    let handle = Arc::new(handle);
    let clock = Clock::new();
    let (stop_tx, stop_rx) = mpsc::channel(4);
    let roles = tokio::spawn(watch_role(
        role,
        events.clone(),
        handle.status(),
        clock,
        stop_rx,
    ));
    let statuses = tokio::spawn(watch_status(handle.status(), events.clone()));
    let stats = tokio::spawn(report_stats(
        handle.clone(),
        events.clone(),
        Duration::from_secs(args.stats_every_s.max(1)),
    ));
    let mut rejoins = tokio::task::JoinSet::new();
    let stopped = control(&handle, &events, &stop_tx, &mut rejoins).await;
    stop_workload(&stop_tx, "stopping").await;
    rejoins.abort_all();
    while rejoins.join_next().await.is_some() {}
    stats.abort();
    let _ = stats.await;
    statuses.abort();
    match Arc::try_unwrap(handle) {
        // Releases the lease if held; the role watcher records the demotion.
        Ok(handle) => handle.shutdown().await,
        Err(handle) => {
            let _ = handle.release().await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), roles).await;
    events.emit("stopped", json!({}));
    stopped
}

/// Records role changes; ends the active period itself at the deadline.
async fn watch_role(
    mut role: watch::Receiver<Role>,
    events: Arc<Events>,
    status: watch::Receiver<ElectorStatus>,
    clock: Clock,
    mut stops: mpsc::Receiver<Stop>,
) {
    let mut current: Option<(i64, tokio::time::Instant)> = None;
    let mut ended_term: i64 = 0;
    loop {
        let deadline = current.map(|(_, until)| until);
        tokio::select! {
            Some((reason, done)) = stops.recv() => {
                // The workload stops before the elector is asked to release
                // or hand over; the term it held never resumes.
                if let Some((term, _)) = current.take() {
                    ended_term = term;
                    events.emit("demoted", json!({ "term": term, "reason": reason }));
                }
                let _ = done.send(());
            }
            changed = role.changed() => {
                if changed.is_err() {
                    if let Some((term, _)) = current.take() {
                        events.emit("demoted", json!({ "term": term, "reason": "elector stopped" }));
                    }
                    return;
                }
                let now_role = *role.borrow_and_update();
                let db_ms = status.borrow().db_time_ms;
                match now_role {
                    Role::Active { term, until } if term == ended_term => {
                        // This term ended at its deadline; it never resumes.
                        tracing::warn!(term, "ignoring a late extension of an ended term");
                        let _ = until;
                    }
                    Role::Active { term, until } => {
                        let until_ns = clock.ns(until);
                        match current {
                            Some((held, _)) if held == term => {
                                events.emit("renewed", json!({
                                    "term": term, "until_ns": until_ns, "db_ms": db_ms }));
                            }
                            Some((held, _)) => {
                                events.emit("demoted", json!({ "term": held, "reason": "new term" }));
                                events.emit("acquired", json!({
                                    "term": term, "until_ns": until_ns, "db_ms": db_ms }));
                            }
                            None => {
                                events.emit("acquired", json!({
                                    "term": term, "until_ns": until_ns, "db_ms": db_ms }));
                            }
                        }
                        current = Some((term, until));
                    }
                    Role::Standby => {
                        if let Some((term, _)) = current.take() {
                            events.emit("demoted", json!({ "term": term, "reason": "role" }));
                        }
                    }
                }
            }
            _ = sleep_until_opt(deadline) => {
                // Check the newest value: an extension published before the
                // deadline counts even if we had not looked at it yet.
                if let Role::Active { term, until } = *role.borrow()
                    && Some(term) == current.map(|(t, _)| t)
                    && until > tokio::time::Instant::now()
                {
                    current = Some((term, until));
                    continue;
                }
                if let Some((term, until)) = current.take() {
                    ended_term = term;
                    events.emit("demoted", json!({
                        "term": term, "reason": "deadline", "until_ns": clock.ns(until) }));
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Records connection changes and errors (the texts are redacted by the elector).
async fn watch_status(mut status: watch::Receiver<ElectorStatus>, events: Arc<Events>) {
    let mut connected = false;
    let mut last_error: Option<String> = None;
    loop {
        let now = status.borrow_and_update().clone();
        if now.connected != connected {
            connected = now.connected;
            events.emit(
                if connected {
                    "connected"
                } else {
                    "disconnected"
                },
                json!({}),
            );
        }
        let error = now.last_error.as_ref().map(ToString::to_string);
        if error.is_some() && error != last_error {
            events.emit("error", json!({ "message": error }));
        }
        last_error = error;
        if status.changed().await.is_err() {
            return;
        }
    }
}

async fn report_stats(handle: Arc<ElectorHandle>, events: Arc<Events>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        events.emit("stats", json!({ "statements": handle.statements() }));
    }
}

/// Serves signals until SIGTERM or SIGINT.
/// Ends the active period (if any) before the elector is told anything.
async fn stop_workload(stops: &mpsc::Sender<Stop>, reason: &'static str) {
    let (done, stopped) = oneshot::channel();
    if stops.send((reason, done)).await.is_ok() {
        let _ = stopped.await;
    }
}

async fn control(
    handle: &Arc<ElectorHandle>,
    events: &Arc<Events>,
    stops: &mpsc::Sender<Stop>,
    rejoins: &mut tokio::task::JoinSet<()>,
) -> ExitCode {
    let (Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = term.recv() => return ExitCode::SUCCESS,
            _ = int.recv() => return ExitCode::SUCCESS,
            _ = usr1.recv() => {
                let term_before = handle.status().borrow().lease.as_ref().map_or(0, |l| l.term);
                stop_workload(stops, "releasing").await;
                match handle.release().await {
                    Ok(held) => events.emit("released", json!({ "held": held })),
                    Err(error) => events.emit("error", json!({ "message": error.to_string() })),
                }
                rejoins.spawn(rejoin(handle.clone(), events.clone(), term_before));
            }
            _ = usr2.recv() => {
                stop_workload(stops, "handing over").await;
                let outcome = handle.hand_over(HandOverTarget::Any).await;
                events.emit("handover", json!({ "outcome": format!("{outcome:?}") }));
            }
        }
    }
}

/// After a release, competes again once another member holds the lease (or
/// after a while, if nobody takes it).
async fn rejoin(handle: Arc<ElectorHandle>, events: Arc<Events>, term_before: i64) {
    let mut status = handle.status();
    let taken = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            // A higher term means someone else acquired after our release
            // (and may have released again since).
            let someone_else = status
                .borrow_and_update()
                .lease
                .as_ref()
                .is_some_and(|l| l.term > term_before);
            if someone_else || status.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if taken.is_err() {
        tracing::warn!("nobody took the released lease within 30 s; competing again");
    }
    match handle.set_ready(true).await {
        Ok(()) => events.emit("rejoined", json!({})),
        Err(error) => events.emit("error", json!({ "message": error.to_string() })),
    }
}
