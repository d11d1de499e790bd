//! A stand-in for the JOC Cockpit container in tests and the demo: while its
//! sidecar's role report says active, it copies the simulated Controller's
//! events into the history (see `joc_ha_standins::history`), fenced by its term.
//! It serves `GET /` (JSON) saying which member answered, the role it has
//! at that instant (`active` or `standby`, judged from the role report when
//! the request comes, as its loop does) and the lease term it acts under
//! (`null` when standby): a client behind the Service learns who served it
//! and under which term. It listens on `--http-addr`, else on JOC's default
//! HTTP port 4446 on every address (a pod as the operator renders it in
//! generic mode sets nothing, and the readiness probe dials that port).
//! It appends its active
//! periods (CLOCK_MONOTONIC, comparable across processes of one host) to a
//! file for the overlap checker: `started` when the process starts,
//! `active` when it first sees its role active for a term, `standby` when it
//! was told so: when its sidecar wrote the standby report (the role file's
//! modification time); without one (the role ran out, the sidecar died, the
//! database fenced the term), at the end of the last step it took while still
//! seeing its role active; never after the latest role deadline it saw. A
//! step still in flight when the standby report came may finish later: the
//! database refuses it if a newer term has written (see `history`).
//!
//! Its database connection is re-opened after errors (a restarted or
//! unreachable database), with a short pause in between.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use joc_ha_sidecar::role::{RoleReport, monotonic_now_ns, read_role_file, writer_alive};
use joc_ha_standins::history::{self, Dialect, Step};
use serde_json::json;

/// Where it listens when nothing is set: JOC's default HTTP port (the
/// JocCluster's `ports.http` default), on every address.
const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:4446";

struct Args {
    member: String,
    role_dir: PathBuf,
    database_url: Option<String>,
    http_addr: String,
    periods: Option<PathBuf>,
}

fn args() -> Result<Args> {
    // In a pod as the operator renders it (on a real node) nothing is set:
    // the pod name is the host name, and the role dir is where the operator
    // mounts it, as a user's cockpit image would find them.
    let mut member = std::env::var("JOC_HA_POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        });
    let mut role_dir = Some(PathBuf::from(
        std::env::var("JOC_HA_ROLE_DIR")
            .unwrap_or_else(|_| joc_ha_crds::names::pod::ROLE_DIR.to_owned()),
    ));
    let mut database_url = std::env::var("STANDIN_DATABASE_URL").ok();
    let mut http_addr = std::env::var("STANDIN_HTTP_ADDR").ok();
    let mut periods = std::env::var("STANDIN_PERIODS_FILE")
        .ok()
        .map(PathBuf::from);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--member" => member = Some(value),
            "--role-dir" => role_dir = Some(PathBuf::from(value)),
            "--database-url" => database_url = Some(value),
            "--http-addr" => http_addr = Some(value),
            "--periods-file" => periods = Some(PathBuf::from(value)),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(Args {
        member: member.context("--member (or JOC_HA_POD_NAME, or HOSTNAME) is required")?,
        role_dir: role_dir.context("--role-dir (or JOC_HA_ROLE_DIR) is required")?,
        database_url,
        http_addr: http_addr.unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned()),
        periods,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    // The term the database fenced (shared with the HTTP answers).
    let fenced = std::sync::Arc::new(std::sync::Mutex::new(None::<i64>));
    let listener = tokio::net::TcpListener::bind(&args.http_addr)
        .await
        .with_context(|| format!("listening on {}", args.http_addr))?;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get({
            let fenced = fenced.clone();
            let member = args.member.clone();
            let role_dir = args.role_dir.clone();
            move || {
                // The role at the instant of the request, not the loop's
                // last look (up to one step old).
                let fenced_term = fenced.lock().map(|f| *f).unwrap_or(None);
                let report = read_role_file(&role_dir).ok();
                let term = active_term(report.as_ref(), || writer_alive(&role_dir), fenced_term);
                async move { axum::Json(answer(&member, term)) }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("standin: HTTP server stopped: {error}");
        }
    });

    let dialect = match &args.database_url {
        Some(url) => Some(Dialect::of_url(url)?),
        None => None,
    };
    let mut connection: Option<sqlx::AnyConnection> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut periods = match &args.periods {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    record(&mut periods, &args.member, "started", 0, monotonic_now_ns());
    // The term we were told, and whether the database fenced it.
    let mut acting: Option<(i64, u64)> = None;
    let mut fenced_term: Option<i64> = None;
    // The latest deadline of an active role we saw while acting: we act
    // only after seeing the role valid, so our period ends there at the latest.
    let mut seen_until: u64 = 0;
    // When the last step taken while acting ended.
    let mut acted_until: u64 = 0;
    loop {
        let report = read_role_file(&args.role_dir).ok();
        let now = monotonic_now_ns();
        let active_term = active_term(
            report.as_ref(),
            || writer_alive(&args.role_dir),
            fenced_term,
        );
        let deadline = report
            .as_ref()
            .filter(|_| active_term.is_some())
            .and_then(|r| r.valid_until_monotonic_ns)
            .unwrap_or(0);
        match (acting, active_term) {
            (None, Some(term)) => {
                acting = Some((term, now));
                seen_until = deadline;
                record(&mut periods, &args.member, "active", term, now);
            }
            (Some((term, _)), new) if new != Some(term) => {
                let told = report
                    .as_ref()
                    .filter(|r| r.role == joc_ha_crds::names::ROLE_STANDBY)
                    .and_then(|_| written_at(&args.role_dir));
                // End the period no later than the role's own deadline.
                record(
                    &mut periods,
                    &args.member,
                    "standby",
                    term,
                    told.unwrap_or(acted_until).min(seen_until),
                );
                acting = None;
                if let Some(term) = new {
                    acting = Some((term, now));
                    seen_until = deadline;
                    record(&mut periods, &args.member, "active", term, now);
                }
            }
            (Some(_), Some(_)) => seen_until = seen_until.max(deadline),
            _ => {}
        }
        if let (Some((term, _)), Some(url), Some(dialect)) =
            (acting, args.database_url.as_deref(), dialect)
        {
            if connection.is_none() && tokio::time::Instant::now() >= retry_at {
                match history::connect(url).await {
                    Ok(conn) => connection = Some(conn),
                    Err(error) => {
                        eprintln!("standin {}: {error:#}", args.member);
                        retry_at = tokio::time::Instant::now() + Duration::from_millis(200);
                    }
                }
            }
            if let Some(conn) = connection.as_mut() {
                match history::copy_new_events(conn, dialect, &args.member, term, 50).await {
                    Ok(Step::Fenced) => {
                        eprintln!("standin {}: term {term} fenced by a newer one", args.member);
                        fenced_term = Some(term);
                        if let Ok(mut shared) = fenced.lock() {
                            *shared = Some(term);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("standin {}: history step failed: {error:#}", args.member);
                        connection = None;
                        retry_at = tokio::time::Instant::now() + Duration::from_millis(200);
                    }
                }
            }
        }
        if acting.is_some() {
            acted_until = monotonic_now_ns();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = sigterm.recv() => {
                if let Some((term, _)) = acting {
                    // Told standby before the signal (preStop), or not.
                    let told = read_role_file(&args.role_dir)
                        .ok()
                        .filter(|r| r.role == joc_ha_crds::names::ROLE_STANDBY)
                        .and_then(|_| written_at(&args.role_dir));
                    let end = told.unwrap_or(acted_until).min(seen_until);
                    record(&mut periods, &args.member, "standby", term, end);
                }
                return Ok(());
            }
        }
    }
}

/// The term this stand-in may act under now: the report's, while it says
/// active before its deadline, the sidecar that wrote it lives, and the
/// database has not fenced that term.
fn active_term(
    report: Option<&RoleReport>,
    writer_alive: impl FnOnce() -> bool,
    fenced_term: Option<i64>,
) -> Option<i64> {
    report
        .filter(|r| r.is_active_now())
        .and_then(|r| r.term)
        .filter(|term| Some(*term) != fenced_term)
        .filter(|_| writer_alive())
}

/// The answer to `GET /`: who served, in which role, under which term.
fn answer(member: &str, active_term: Option<i64>) -> serde_json::Value {
    let role = match active_term {
        Some(_) => joc_ha_crds::names::ROLE_ACTIVE,
        None => joc_ha_crds::names::ROLE_STANDBY,
    };
    json!({"member": member, "role": role, "term": active_term, "active": active_term.is_some()})
}

/// When the role file was written, on CLOCK_MONOTONIC (from its
/// modification time, which the kernel sets whatever the writer's clock).
fn written_at(role_dir: &std::path::Path) -> Option<u64> {
    let modified = std::fs::metadata(role_dir.join(joc_ha_sidecar::role::ROLE_FILE))
        .ok()?
        .modified()
        .ok()?;
    let age = std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    Some(monotonic_now_ns().saturating_sub(u64::try_from(age.as_nanos()).ok()?))
}

/// Appends one record in a single write, so that a SIGKILL cannot leave a
/// torn line between two whole ones.
fn record(file: &mut Option<std::fs::File>, member: &str, event: &str, term: i64, at_ns: u64) {
    if let Some(file) = file {
        let line = json!({"member": member, "event": event, "term": term, "mono_ns": at_ns});
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_acts_only_under_a_live_unfenced_unexpired_active_report() {
        let active = RoleReport::active("joc-0", "joc", 7, Duration::from_secs(60));
        let expired = RoleReport {
            valid_until_monotonic_ns: Some(monotonic_now_ns().saturating_sub(1)),
            ..active.clone()
        };
        let standby = RoleReport::standby("joc-0", "joc");
        // (report, writer alive, fenced term) -> term acted under
        type Row<'a> = (Option<&'a RoleReport>, bool, Option<i64>, Option<i64>);
        let table: [Row; 7] = [
            (Some(&active), true, None, Some(7)),
            (Some(&active), true, Some(6), Some(7)),
            (Some(&active), true, Some(7), None),
            (Some(&active), false, None, None),
            (Some(&expired), true, None, None),
            (Some(&standby), true, None, None),
            (None, true, None, None),
        ];
        for (report, alive, fenced, want) in table {
            assert_eq!(
                active_term(report, || alive, fenced),
                want,
                "{report:?} alive {alive} fenced {fenced:?}"
            );
        }
    }

    #[test]
    fn the_answer_says_standby_with_no_term_when_not_acting() {
        assert_eq!(
            answer("joc-1", None),
            json!({"member": "joc-1", "role": "standby", "term": null, "active": false})
        );
        assert_eq!(
            answer("joc-0", Some(3)),
            json!({"member": "joc-0", "role": "active", "term": 3, "active": true})
        );
    }
}
