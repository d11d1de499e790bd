//! joc-standin: a stand-in for one JOC Cockpit container (sosberlin/js7 image):
//! the image's entrypoint, then a "JVM" running JOC's servlet start-up and
//! its cluster service (JOC_CLUSTER / JOC_INSTANCES), following SOS's
//! `JocServletContainer`, `DbInstaller`, `CheckInstance`, `JocCluster`,
//! `JocClusterActiveMemberHandler` and `ClusterResourceImpl` (see
//! `joc_ha_standins::joc` and docs/joc-facts.md). Its "services" are a
//! flag, a log line and an optional periods file.
//!
//! Layouts:
//! - `--jetty-base DIR` (the image's): reads exactly what JOC reads below
//!   JETTY_BASE (`resources/joc/joc.properties`, its hibernate file,
//!   `webapps/joc/WEB-INF/classes/joc-settings.properties`, `lib/ext/joc/js7-license.jar`),
//!   the port from `RUN_JS_HTTP_PORT`. The process is the container: it runs
//!   the entrypoint, then starts the "JVM" as a child process (this binary
//!   again, `joc-standin jvm -Djetty.base=<JETTY_BASE> ...`, so that its
//!   command line carries the marker a real JVM's does and the sidecar can
//!   find and fence it, see README "Fencing"). When the JVM dies (a refused
//!   start, SIGKILL of its pid, or SIGUSR1 to the container, which SIGKILLs
//!   the JVM) the container keeps running and answers nothing, as the
//!   image's `tail -f /dev/null` does (docs/joc-facts.md fact 3), unless
//!   `--exit-with-jvm`. SIGTERM to the container is passed on to the JVM
//!   (JOC's clean shutdown, fact 12). Both stay in the container's process
//!   group, so a freeze or kill of the group takes them together.
//! - `--resources-dir DIR`: LEGACY (the old operator layout; remove when the
//!   operator's new layout has landed): lenient (no `ordering` needed, API
//!   server from `cluster_id = api`, license assumed, tables created unless
//!   `--no-create-schema`); the process exits with the JVM.
//!
//! Serves `GET /joc/api/version` (no login, docs/joc-facts.md fact 8), `GET /` (the
//! stand-in's status) and `POST /joc/api/joc/cluster/switch_member` (no
//! authentication in the stand-in; JOC requires an X-Access-Token).
//!
//! `joc-standin image-files --resources DIR --classes DIR` writes what the
//! image ships in `resources/joc` and `webapps/joc/WEB-INF/classes`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::http::StatusCode;
use clap::{Parser, Subcommand};
use joc_ha_standins::joc::{
    self, HibernateConfig, JocProperties, JocSettings, License, Member, MemberConfig, Performed,
    Services, SwitchError,
};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "joc-standin",
    about = "Stand-in for a JOC Cockpit container and its cluster service",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The image's JETTY_BASE (/var/sos-berlin.com/js7/joc) as a host folder.
    #[arg(long, conflicts_with = "resources_dir")]
    jetty_base: Option<PathBuf>,
    /// LEGACY layout: folder with joc.properties and hibernate.cfg.xml.
    #[arg(long)]
    resources_dir: Option<PathBuf>,
    /// The data directory whose path is hashed into the member id (JOC:
    /// user.dir). Default: the JETTY_BASE, legacy: the current directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hostname for the member id (default: env HOSTNAME, else the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// LEGACY layout: HTTP listen address, e.g. 127.0.0.1:4446.
    #[arg(long)]
    http_addr: Option<String>,
    /// The address the HTTP port (RUN_JS_HTTP_PORT) is bound on.
    #[arg(long, default_value = "127.0.0.1")]
    http_host: String,
    /// Append a JSON line per services start/stop (CLOCK_MONOTONIC ns).
    #[arg(long)]
    periods_file: Option<PathBuf>,
    /// LEGACY layout: do not create JOC's tables.
    #[arg(long)]
    no_create_schema: bool,
    /// Time from the JVM's start to the cluster service's first database
    /// write (docs/joc-facts.md fact 22: 10–20 s for real JOC on 2 loaded cores), e.g. 3s, 500ms.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    startup_delay: Duration,
    /// How long the start of services sleeps while no Controller is
    /// registered (JOC: 1 min).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    controllers_retry: Duration,
    /// Exit (with the JVM's code) when the JVM ends, instead of living on
    /// like the image's container.
    #[arg(long)]
    exit_with_jvm: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the files the sosberlin/js7 JOC image ships (the installer's
    /// joc.properties, log4j2.xml, start.d, joc-settings.properties).
    ImageFiles {
        /// Gets the image's `$JETTY_BASE/resources/joc/.`
        #[arg(long)]
        resources: PathBuf,
        /// Gets the image's `$JETTY_BASE/webapps/joc/WEB-INF/classes/joc-settings.properties`.
        #[arg(long)]
        classes: PathBuf,
    },
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is no duration (e.g. 3s, 500ms)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} must not be negative"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn hostname(flag: Option<String>) -> String {
    // SOSShell.getLocalHostName: env HOSTNAME if non-empty, else the host's name, else "unknown".
    if let Some(h) = flag.filter(|h| !h.is_empty()) {
        return h;
    }
    if let Some(h) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        return h;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[tokio::main]
async fn main() {
    // `joc-standin jvm -Djetty.base=<base> <container args...>`: the JVM child
    // (hidden; the marker is what `ps` shows of a real JOC's java).
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == WITNESS_SUBCOMMAND) {
        std::process::exit(run_witness(&argv[2..]).await);
    }
    let is_jvm = argv.get(1).is_some_and(|a| a == JVM_SUBCOMMAND)
        && argv
            .get(2)
            .is_some_and(|a| a.to_string_lossy().starts_with(JETTY_BASE_MARKER));
    if is_jvm {
        argv.drain(1..3);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_target(false)
        .with_ansi(false)
        .init();
    let args = Args::parse_from(argv);
    let result = if is_jvm {
        run_jvm_process(args).await
    } else {
        run(args).await
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("joc-standin: {error:#}");
            2
        }
    };
    std::process::exit(code);
}

/// The hidden subcommand that runs the JVM part as its own process.
const JVM_SUBCOMMAND: &str = "jvm";
/// `joc-standin witness <jvm pid> <periods file> <host>` (hidden): notes in
/// the periods file that the JVM died. The container part notes it too
/// when it survives the JVM, but a fence SIGKILLs the container's whole
/// process group with it (README "Fencing"); the witness runs in a process
/// group of its own and outlives them.
const WITNESS_SUBCOMMAND: &str = "witness";
/// How often the witness looks (its note is at most this late).
const WITNESS_LOOK: Duration = Duration::from_millis(2);

async fn run_witness(args: &[std::ffi::OsString]) -> i32 {
    let [pid, periods, host] = args else {
        eprintln!("usage: joc-standin {WITNESS_SUBCOMMAND} <jvm pid> <periods file> <host>");
        return 2;
    };
    let Some(pid) = pid.to_str().and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!("joc-standin {WITNESS_SUBCOMMAND}: {pid:?} is no pid");
        return 2;
    };
    let proc_root = Path::new("/proc");
    while !joc_ha_sidecar::js7::fence::is_gone(proc_root, pid) {
        tokio::time::sleep(WITNESS_LOOK).await;
    }
    // After a clean stop or a refused start no period is open, and the
    // judge (`joc_ha_tests::agreement`) ignores the note.
    let host = host.to_string_lossy();
    match joc::append_period_record(Path::new(periods), &host, "killed") {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("[periods] {error:#}");
            1
        }
    }
}

/// Starts the witness of the JVM `pid` (see [`WITNESS_SUBCOMMAND`]).
fn spawn_witness(pid: i32, periods_file: &Path, host: &str) -> Result<()> {
    let exe = std::env::current_exe().context("finding joc-standin's own binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg(WITNESS_SUBCOMMAND)
        .arg(pid.to_string())
        .arg(periods_file)
        .arg(host)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting the JVM's witness")?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}
/// The JVM's command-line marker. ASSUMPTION (the image's start script is
/// not in SOS's public repository): the image starts Jetty as
/// `java ... -Djetty.base=$JETTY_BASE -jar start.jar`, as Jetty's own
/// `jetty.sh` does; the sidecar looks for this argument to find the JVM.
const JETTY_BASE_MARKER: &str = "-Djetty.base=";

/// What the JVM part is started with.
struct Jvm {
    legacy: bool,
    resources: PathBuf,
    /// `<JETTY_BASE>` (None: legacy).
    jetty_base: Option<PathBuf>,
    hostname: String,
    data_dir: String,
    http: Option<String>,
    periods_file: Option<PathBuf>,
    create_schema: bool,
    startup_delay: Duration,
    controllers_retry: Duration,
}

/// The JVM part's settings from the container's arguments; `http` is the
/// address the entrypoint chose.
fn jvm_of(args: &Args, base: &Path, http: Option<String>) -> Result<Jvm> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| base.to_path_buf());
    Ok(Jvm {
        legacy: false,
        resources: base.join("resources/joc"),
        jetty_base: Some(base.to_path_buf()),
        hostname: hostname(args.hostname.clone()),
        data_dir: utf8(&data_dir)?,
        http,
        periods_file: args.periods_file.clone(),
        create_schema: false,
        startup_delay: args.startup_delay,
        controllers_retry: args.controllers_retry,
    })
}

/// `joc-standin jvm -Djetty.base=...`: the JVM process. SIGTERM (or
/// Ctrl-C) is JOC's clean shutdown; SIGKILL ends it without a step.
async fn run_jvm_process(args: Args) -> Result<i32> {
    let base = args
        .jetty_base
        .clone()
        .context("the jvm part needs --jetty-base")?;
    let jvm = jvm_of(&args, &base, http_addr(&args.http_host)?)?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (close, closed) = tokio::sync::watch::channel(false);
    let jvm = run_jvm(jvm, closed);
    tokio::pin!(jvm);
    tokio::select! {
        code = &mut jvm => return Ok(code),
        _ = term.recv() => tracing::info!("[jvm] SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("[jvm] SIGINT"),
    }
    let _ = close.send(true);
    Ok(tokio::time::timeout(Duration::from_secs(20), jvm)
        .await
        .unwrap_or(1))
}

/// Starts the JVM child: this binary with `jvm -Djetty.base=<base>` and the
/// container's own arguments, in the container's process group, dying with
/// the container process.
fn spawn_jvm(base: &Path) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding joc-standin's own binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(JVM_SUBCOMMAND)
        .arg(format!("{JETTY_BASE_MARKER}{}", utf8(base)?))
        .args(std::env::args_os().skip(1))
        .kill_on_drop(true);
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn().context("starting the JVM process")
}

/// An exit status as a shell reports it (128 + signal).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn run(args: Args) -> Result<i32> {
    if let Some(Command::ImageFiles { resources, classes }) = &args.command {
        image_files(resources, classes)?;
        return Ok(0);
    }
    let Some(base) = args.jetty_base.clone() else {
        return run_legacy(args).await;
    };
    // The image's entrypoint (docs/joc-facts.md fact 3); its failures end the container.
    entrypoint(&base, &args.http_host)?;
    let host = hostname(args.hostname.clone());
    let periods_file = args.periods_file.clone();
    let mut child = spawn_jvm(&base)?;
    let pid = child.id().map_or(-1, |p| p as i32);
    if let Some(path) = &periods_file {
        spawn_witness(pid, path, &host)?;
    }
    tracing::info!("[container] JVM started, pid {pid}");
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("listening for SIGUSR1")?;
    let mut running = true;
    loop {
        tokio::select! {
            status = child.wait(), if running => {
                running = false;
                let status = status.context("waiting for the JVM")?;
                let code = exit_code(status);
                tracing::info!("[jvm] exited with code {code}");
                if code > 128 {
                    // Killed by a signal: its services died with it, and
                    // a dead JVM cannot say so.
                    tracing::warn!("[jvm] killed by signal {}", code - 128);
                    note_jvm_killed(periods_file.as_deref(), &host);
                }
                if args.exit_with_jvm {
                    return Ok(code);
                }
                tracing::info!("[container] lives on without its JVM (tail -f /dev/null)");
            }
            _ = term.recv() => {
                tracing::info!("[container] SIGTERM");
                if !running {
                    return Ok(0);
                }
                signal_pid(pid, nix::sys::signal::Signal::SIGTERM);
                return Ok(match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                    Ok(Ok(status)) => exit_code(status),
                    _ => 1,
                });
            }
            _ = tokio::signal::ctrl_c() => {
                if !running {
                    return Ok(0);
                }
                signal_pid(pid, nix::sys::signal::Signal::SIGTERM);
                return Ok(match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                    Ok(Ok(status)) => exit_code(status),
                    _ => 1,
                });
            }
            _ = usr1.recv() => {
                if running {
                    // Like kill -9 of the java process: no shutdown steps at all.
                    tracing::warn!("[container] SIGUSR1: SIGKILL to the JVM (pid {pid})");
                    signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

fn signal_pid(pid: i32, signal: nix::sys::signal::Signal) {
    if pid > 0
        && let Err(error) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
    {
        tracing::warn!("[container] sending {signal} to the JVM (pid {pid}): {error}");
    }
}

/// LEGACY layout: one process that is container and JVM at once.
async fn run_legacy(args: Args) -> Result<i32> {
    let Some(resources) = &args.resources_dir else {
        bail!("give --jetty-base DIR (or the legacy --resources-dir DIR)");
    };
    tracing::warn!("[legacy layout] --resources-dir: lenient stand-in (to be removed)");
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => joc::default_data_dir()?,
    };
    let jvm = Jvm {
        legacy: true,
        resources: resources.clone(),
        jetty_base: None,
        hostname: hostname(args.hostname.clone()),
        data_dir: utf8(&data_dir)?,
        http: args.http_addr.clone(),
        periods_file: args.periods_file.clone(),
        create_schema: !args.no_create_schema,
        startup_delay: args.startup_delay,
        controllers_retry: args.controllers_retry,
    };
    let periods_file = jvm.periods_file.clone();
    let host = jvm.hostname.clone();
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("listening for SIGUSR1")?;
    let (close, closed) = tokio::sync::watch::channel(false);
    let jvm = run_jvm(jvm, closed);
    tokio::pin!(jvm);
    tokio::select! {
        code = &mut jvm => {
            tracing::info!("[jvm] exited with code {code}");
            Ok(code)
        }
        _ = term.recv() => {
            tracing::info!("[container] SIGTERM");
            let _ = close.send(true);
            Ok(tokio::time::timeout(Duration::from_secs(20), jvm).await.unwrap_or(1))
        }
        _ = tokio::signal::ctrl_c() => {
            let _ = close.send(true);
            Ok(tokio::time::timeout(Duration::from_secs(20), jvm).await.unwrap_or(1))
        }
        _ = usr1.recv() => {
            tracing::warn!("[jvm] killed (SIGUSR1)");
            note_jvm_killed(periods_file.as_deref(), &host);
            Ok(137)
        }
    }
}

/// The JVM's services died with it: the container part says so in the
/// periods file (a dead JVM cannot).
fn note_jvm_killed(periods_file: Option<&Path>, host: &str) {
    if let Some(path) = periods_file
        && let Err(error) = joc::append_period_record(path, host, "killed")
    {
        tracing::warn!("[periods] {error:#}");
    }
}

fn utf8(path: &Path) -> Result<String> {
    Ok(path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?
        .to_owned())
}

/// The image's entrypoint, as docs/joc-facts.md fact 3 describes it: appends `cluster_id`
/// and a random `ordering` to `resources/joc/joc.properties` only when
/// missing (a read-only file makes it fail), copies `resources/joc/start.d/*.ini`
/// into `start.d`, copies `resources/joc/lib/js7-license.jar` into
/// `lib/ext/joc` when `resources/joc/license` exists, and takes the HTTP port
/// from `RUN_JS_HTTP_PORT` (unset: 4446, empty: no HTTP listener).
/// `RUN_JS_JAVA_OPTIONS` has no JVM to go to here. Checks the HTTP port.
fn entrypoint(base: &Path, http_host: &str) -> Result<()> {
    let resources = base.join("resources/joc");
    let properties = resources.join("joc.properties");
    let text = match std::fs::read_to_string(&properties) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", properties.display())),
    };
    let keys = joc::parse_java_properties(&text);
    let mut append = String::new();
    if !keys.contains_key("cluster_id") {
        append.push_str("cluster_id = joc\n");
    }
    if !keys.contains_key("ordering") {
        // The range is ours; the entrypoint's random number is not looked up.
        append.push_str(&format!("ordering = {}\n", rand::random_range(0..100)));
    }
    if !append.is_empty() {
        use std::io::Write as _;
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&properties)
            .and_then(|mut f| f.write_all(format!("{separator}{append}").as_bytes()))
            .with_context(|| {
                format!(
                    "entrypoint: cannot append {:?} to {}: the image's entrypoint needs a writable joc.properties",
                    append.trim_end(),
                    properties.display()
                )
            })?;
        tracing::info!(
            "[entrypoint] appended to joc.properties: {}",
            append.trim_end().replace('\n', ", ")
        );
    }
    let start_d = resources.join("start.d");
    if start_d.is_dir() {
        std::fs::create_dir_all(base.join("start.d"))?;
        for entry in std::fs::read_dir(&start_d)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "ini")
                && let Some(name) = path.file_name()
            {
                std::fs::copy(&path, base.join("start.d").join(name))
                    .with_context(|| format!("entrypoint: copying {}", path.display()))?;
            }
        }
    }
    if resources.join("license").exists() {
        let jar = resources.join("lib/js7-license.jar");
        let ext = base.join("lib/ext/joc");
        std::fs::create_dir_all(&ext)?;
        std::fs::copy(&jar, ext.join("js7-license.jar"))
            .with_context(|| format!("entrypoint: copying {}", jar.display()))?;
        tracing::info!("[entrypoint] license: js7-license.jar copied into lib/ext/joc");
    }
    if let Ok(options) = std::env::var("RUN_JS_JAVA_OPTIONS") {
        tracing::info!("[entrypoint] RUN_JS_JAVA_OPTIONS={options} (no JVM in the stand-in)");
    }
    if http_addr(http_host)?.is_none() {
        tracing::info!("[entrypoint] RUN_JS_HTTP_PORT is empty: no HTTP listener");
    }
    Ok(())
}

/// Jetty's HTTP address from `RUN_JS_HTTP_PORT` (unset: 4446, empty: none).
fn http_addr(http_host: &str) -> Result<Option<String>> {
    match std::env::var("RUN_JS_HTTP_PORT") {
        Err(_) => Ok(Some(format!("{http_host}:4446"))),
        Ok(port) if port.trim().is_empty() => Ok(None),
        Ok(port) => {
            let port: u16 = port
                .trim()
                .parse()
                .with_context(|| format!("entrypoint: RUN_JS_HTTP_PORT={port:?} is no port"))?;
            Ok(Some(format!("{http_host}:{port}")))
        }
    }
}

/// `image-files`: what the image ships (installer defaults; wording ours).
fn image_files(resources: &Path, classes: &Path) -> Result<()> {
    std::fs::create_dir_all(resources.join("start.d"))?;
    std::fs::create_dir_all(classes)?;
    std::fs::write(
        resources.join("joc.properties"),
        "# joc.properties as the JOC installer writes it (stand-in image)\n\
         log4j.configuration = log4j2.xml\n\
         hibernate_configuration_file = hibernate.cfg.xml\n\
         title = \n",
    )?;
    std::fs::write(
        resources.join("log4j2.xml"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Configuration status=\"WARN\">\n  <Appenders><Console name=\"stdout\"/></Appenders>\n  <Loggers><Root level=\"info\"><AppenderRef ref=\"stdout\"/></Root></Loggers>\n</Configuration>\n",
    )?;
    std::fs::write(
        resources.join("start.d/http.ini"),
        "## Jetty's HTTP connector (stand-in image)\n--module=http\n",
    )?;
    std::fs::write(
        classes.join("joc-settings.properties"),
        "# JOC's classpath settings (stand-in image)\nsecurity_level = low\n",
    )?;
    Ok(())
}

struct Shared {
    member: tokio::sync::Mutex<Member>,
    /// What `GET /` answers, without waiting for a poll in progress.
    status: std::sync::Mutex<Value>,
    services: Services,
    /// The web application is up (after the servlet's init).
    webapp_up: AtomicBool,
}

impl Shared {
    fn refresh_status(&self) {
        if let Ok(mut status) = self.status.lock() {
            status["active"] = self.services.is_active().into();
        }
    }
}

/// Aborts the spawned task when dropped (the JVM's threads die with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The "JVM": JOC's servlet init (`JocServletContainer.init`:
/// `DbInstaller.createTables`, `CheckInstance.check`; a failure stops JOC),
/// the web server, then the cluster service thread. Returns its exit code.
async fn run_jvm(jvm: Jvm, closed: tokio::sync::watch::Receiver<bool>) -> i32 {
    match jvm_main(jvm, closed).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("[jvm] {error:#}");
            1
        }
    }
}

async fn jvm_main(jvm: Jvm, mut closed: tokio::sync::watch::Receiver<bool>) -> Result<i32> {
    let props_path = jvm.resources.join("joc.properties");
    let text = std::fs::read_to_string(&props_path)
        .with_context(|| format!("reading {}", props_path.display()))?;
    let properties = JocProperties::parse(&text)?;
    let hib_path = jvm.resources.join(&properties.hibernate_configuration_file);
    let xml = std::fs::read_to_string(&hib_path)
        .with_context(|| format!("reading {}", hib_path.display()))?;
    // `${JS7_DBMS_*}` from the environment (docs/joc-facts.md fact 7).
    let url = HibernateConfig::parse(&xml)
        .with_context(|| format!("in {}", hib_path.display()))?
        .resolve_placeholders(|k| std::env::var(k).ok())
        .sqlx_url()?;

    let (settings, ordering, license) = match &jvm.jetty_base {
        Some(base) => {
            // docs/joc-facts.md fact 1: the classpath file decides API server and security level.
            let settings = JocSettings::read(
                &base.join("webapps/joc/WEB-INF/classes/joc-settings.properties"),
            )?;
            // docs/joc-facts.md fact 2: Globals.getOrdering, thrown from the servlet's init
            // (sos-webservices-joc-global/.../servlet/JocServletContainer.java → CheckInstance).
            let ordering = match properties.checked_ordering() {
                Ok(o) => o,
                Err(message) => {
                    tracing::error!("[servlet init][JocConfigurationException] {message}");
                    return Ok(1);
                }
            };
            (
                settings,
                ordering,
                License::Jar(base.join("lib/ext/joc/js7-license.jar")),
            )
        }
        None => {
            // LEGACY: cluster_id = api, ordering optional, license assumed.
            let settings = JocSettings {
                api_server: properties.legacy_api_server(),
                ..JocSettings::default()
            };
            let ordering = properties.checked_ordering().unwrap_or(0);
            (settings, ordering, License::Assumed)
        }
    };

    let mut config = MemberConfig::new(
        &jvm.hostname,
        &jvm.data_dir,
        properties.clone(),
        settings,
        ordering,
        license.clone(),
    );
    config.controllers_retry = jvm.controllers_retry;
    let member_id = config.member_id.clone();
    tracing::info!(
        "[start][hostname={}][memberId={member_id}][dataDirectory={}][jocId={}][apiServer={}][securityLevel={}][licensed={}][pollingInterval={}s][heartBeatExceededInterval={}s][db={}]",
        jvm.hostname,
        config.data_directory,
        config.joc_id(),
        config.api_server(),
        config.security_level.name(),
        license.present(),
        properties.polling_interval_s,
        properties.heart_beat_exceeded_interval_s,
        joc::redact_url(&url)
    );
    let services = Services::new(&member_id, jvm.periods_file.as_deref())?;
    let api_server = config.api_server();
    let mut member = Member::new(config, &url, services.clone(), closed.clone())?;

    let (poll, wait_on_error) = joc::polling(&properties);
    if jvm.legacy {
        // LEGACY: our installer step, retried like the old stand-in.
        loop {
            if !jvm.create_schema {
                break;
            }
            tokio::select! {
                _ = closed.wait_for(|c| *c) => return Ok(0),
                created = joc::create_schema(&url) => match created {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!("[start][db error, retrying in {wait_on_error:?}]{error:#}");
                        tokio::time::sleep(wait_on_error).await;
                    }
                }
            }
        }
    } else if let Some(base) = &jvm.jetty_base {
        // sos-webservices-joc-global/.../db/DbInstaller.java: tables only with
        // `create_db_tables = true` or the signal file `<user.dir>/etc/createTables`
        // (deleted); afterwards JOC writes `create_db_tables = false` (docs/joc-facts.md fact 5).
        let signal = base.join("etc/createTables");
        let by_signal = signal.exists();
        if by_signal {
            let _ = std::fs::remove_file(&signal);
        }
        if by_signal || properties.create_db_tables {
            tracing::info!("[DbInstaller] ...installing tables which do not exist");
            joc::create_schema(&url)
                .await
                .context("[servlet init] DbInstaller")?;
            if let Err(error) = set_property(&props_path, "create_db_tables", "false") {
                tracing::warn!("[DbInstaller] Problem updating the joc.properties file: {error:#}");
            }
        }
        // CI: a live instance with the same ordering refuses this one.
        match member
            .check_instance()
            .await
            .context("[servlet init] CheckInstance")?
        {
            Ok(()) => {}
            Err(message) => {
                tracing::error!("[servlet init][JocConfigurationException] {message}");
                return Ok(1);
            }
        }
    }

    let shared = Arc::new(Shared {
        member: tokio::sync::Mutex::new(member),
        status: std::sync::Mutex::new(json!({
            "member": jvm.hostname,
            "memberId": member_id,
            "active": false,
            "apiServer": api_server,
        })),
        services,
        webapp_up: AtomicBool::new(true),
    });
    let _server = match &jvm.http {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!("[http] listening on {addr}");
            let app = router(shared.clone());
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!("[http] server stopped: {error}");
                }
            })))
        }
        None => None,
    };

    // The cluster service's thread (`JocClusterService.start`), which the web
    // application does not wait for; its first database write comes only after
    // the rest of JOC's start-up (docs/joc-facts.md fact 22).
    let cluster = async {
        tokio::time::sleep(jvm.startup_delay).await;
        let retry = if jvm.legacy {
            wait_on_error
        } else {
            Duration::from_secs(30) // JC getInstance: "wait 30s and try again"
        };
        loop {
            match shared.member.lock().await.start().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!("[getInstance][db error, retrying in {retry:?}]{error:#}");
                    tokio::time::sleep(retry).await;
                }
            }
        }
        // JC `doProcessing`: process, then wait pollingInterval (on error
        // pollingWaitIntervalOnError). The start or stop of the services runs
        // after the member's lock is released (AMH is its own monitor).
        loop {
            let (result, handler) = {
                let mut member = shared.member.lock().await;
                let result = member.process().await;
                (result, member.handler())
            };
            shared.refresh_status();
            let wait = match result {
                Ok(Some((start, mode))) => {
                    let answer = handler.perform(mode, start).await;
                    if matches!(
                        answer,
                        Performed::MissingLicense | Performed::MissingControllers
                    ) {
                        tracing::error!("[perform]{answer:?}");
                    }
                    shared.refresh_status();
                    poll
                }
                Ok(None) => poll,
                Err(error) => {
                    tracing::warn!("[poll][db error]{error:#}");
                    wait_on_error
                }
            };
            tokio::time::sleep(wait).await;
        }
    };
    tokio::select! {
        biased;
        _ = closed.wait_for(|c| *c) => {}
        () = cluster => {}
    }

    tracing::info!("[shutdown]");
    shared.webapp_up.store(false, Ordering::Relaxed);
    let mut member = shared.member.lock().await;
    let result = tokio::time::timeout(Duration::from_secs(10), member.shutdown()).await;
    shared.refresh_status();
    match result {
        Ok(Ok(deleted)) => {
            tracing::info!(
                "[shutdown][deleted own JOC_CLUSTER row: {}][instance heartbeat reset]",
                deleted > 0
            );
            Ok(0)
        }
        Ok(Err(error)) => {
            tracing::error!("[shutdown][cluster close failed]{error:#}");
            Ok(1)
        }
        Err(_) => {
            tracing::error!("[shutdown][cluster close timed out]");
            Ok(1)
        }
    }
}

/// Sets `key = value` in a properties file, replacing the key's line (ours:
/// JOC's `updateProperty` rewrites the file).
fn set_property(path: &Path, key: &str, value: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut out = String::with_capacity(text.len() + 32);
    let mut found = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']) || rest.is_empty());
        if is_key && !found {
            out.push_str(&format!("{key} = {value}\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("{key} = {value}\n"));
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::{get, post};
    let root = shared.clone();
    let version = shared.clone();
    axum::Router::new()
        .route(
            "/",
            get(move || {
                let body = root.status.lock().map(|s| s.clone()).unwrap_or_default();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/joc/api/version",
            get(move || {
                let up = version.webapp_up.load(Ordering::Relaxed);
                async move {
                    if up {
                        (
                            StatusCode::OK,
                            axum::Json(json!({"version": joc::STANDIN_VERSION, "deliveryDate": delivery_date()})),
                        )
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(Value::Null))
                    }
                }
            }),
        )
        .route(
            "/joc/api/joc/cluster/switch_member",
            post(move |body: axum::body::Bytes| switch_member(shared.clone(), body)),
        )
}

fn delivery_date() -> String {
    jiff::Timestamp::now().to_string()
}

/// JOC's error answer (`JOCDefaultResponse.responseStatusJSError` →
/// `responseStatus420`): HTTP 420, body `Err420`
/// `{"error": {"code", "message"}, "surveyDate", "deliveryDate"}`. For a
/// `JocException` the message is `getErrorMessage(e)` = `"<ExceptionClass>: " + message`;
/// `ClusterResourceImpl` throws `JocServiceException`. The code "JOC-420" is ours.
fn refusal(message: &str) -> (StatusCode, axum::Json<Value>) {
    let status = StatusCode::from_u16(420).unwrap_or(StatusCode::BAD_REQUEST);
    let now = delivery_date();
    (
        status,
        axum::Json(json!({
            "error": {"code": "JOC-420", "message": message},
            "surveyDate": now,
            "deliveryDate": now,
        })),
    )
}

async fn switch_member(
    shared: Arc<Shared>,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    // Body: ClusterSwitchMember {"memberId": "...", "auditLog": {...}}.
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(error) => return refusal(&format!("invalid JSON body: {error}")),
    };
    let target = parsed
        .get("memberId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    tracing::info!("[switch_member][request][memberId={target:?}]");
    let mut member = shared.member.lock().await;
    let result = member.switch_member(target.as_deref()).await;
    drop(member);
    shared.refresh_status();
    match result {
        Ok(state) => (
            StatusCode::OK,
            axum::Json(json!({
                "type": "cluster",
                "state": state.name(),
                "deliveryDate": delivery_date(),
            })),
        ),
        Err(SwitchError::Refused(message)) => {
            tracing::info!("[switch_member][refused]{message}");
            refusal(&format!("JocServiceException: {message}"))
        }
        Err(SwitchError::MissingLicense) => {
            tracing::info!("[switch_member][refused]MISSING_LICENSE");
            refusal("JocServiceException: MISSING_LICENSE")
        }
        Err(SwitchError::Database(error)) => {
            tracing::warn!("[switch_member][db error]{error:#}");
            refusal(&format!("{error:#}"))
        }
    }
}
