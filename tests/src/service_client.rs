//! A client behind the Service and the lease's view beside it (issue #15):
//!
//! * [`ServiceClient`]: a thread of the test process that enters a node's
//!   network namespace (`setns`, so its sockets are the node's, as a pod's
//!   client would be routed by kube-proxy) and sends `GET /` to a Service's
//!   ClusterIP at a fixed rate, each on a new connection, recording each
//!   answer or error with its send and receive times;
//! * [`LeaseObserver`]: polls the lease row in the database, recording who
//!   held which term validly at each look;
//! * [`check`]: judges the two together (pure).

pub mod check;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use sqlx::{AssertSqlSafe, Row as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::lease_history::group::monotonic_ns;
use check::{Answer, LeaseSample, Outcome, Request};

/// Requests that neither connected nor answered within this are errors.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The client thread; stops (and is joined) on [`ServiceClient::stop`] or drop.
pub struct ServiceClient {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServiceClient {
    /// Starts sending `per_second` requests a second to `target` from the
    /// network namespace at `netns` (e.g. [`crate::realnode::RealNode::netns`]).
    /// Requests do not wait for each other: a hung one does not delay the next.
    pub fn start(netns: &Path, target: SocketAddr, per_second: u32) -> Result<ServiceClient> {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let netns: PathBuf = netns.to_path_buf();
        let period = Duration::from_secs(1) / per_second.max(1);
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("service-client".to_owned())
            .spawn({
                let stop = stop.clone();
                let requests = requests.clone();
                move || {
                    let entered = enter_netns(&netns);
                    let failed = entered.as_ref().err().map(|e| format!("{e:#}"));
                    let _ = entered_tx.send(failed);
                    entered?;
                    // One thread: every socket is made by this thread, in the node's netns.
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(send_until_stopped(target, period, &stop, &requests));
                    Ok(())
                }
            })?;
        let client = ServiceClient {
            stop,
            requests,
            thread: Some(thread),
        };
        if let Some(error) = entered_rx
            .recv()
            .context("the client thread ended before entering the netns")?
        {
            anyhow::bail!("the client could not enter the node's network namespace: {error}");
        }
        Ok(client)
    }

    /// The requests finished so far, in the order they finished.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops sending, waits for the requests in flight, returns them all.
    pub fn stop(mut self) -> Result<Vec<Request>> {
        self.join()?;
        Ok(self.requests())
    }

    fn join(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for ServiceClient {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

fn enter_netns(netns: &Path) -> Result<()> {
    let file =
        std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {}", netns.display()))?;
    Ok(())
}

async fn send_until_stopped(
    target: SocketAddr,
    period: Duration,
    stop: &AtomicBool,
    requests: &Arc<Mutex<Vec<Request>>>,
) {
    let mut ticks = tokio::time::interval(period);
    // A late tick (a busy machine) sends one request, not a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let requests = requests.clone();
        in_flight.spawn(async move {
            let sent_ns = monotonic_ns();
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, get(target)).await {
                Ok(Ok(answer)) => Outcome::Answer(answer),
                Ok(Err(error)) => Outcome::Error(error),
                Err(_) => Outcome::Error(format!("no answer within {REQUEST_TIMEOUT:?}")),
            };
            let request = Request {
                sent_ns,
                received_ns: monotonic_ns(),
                outcome,
            };
            if let Ok(mut requests) = requests.lock() {
                requests.push(request);
            }
        });
        // Reap finished requests as we go.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// One `GET /` on a new connection.
async fn get(target: SocketAddr) -> Result<Answer, String> {
    let mut stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    parse_response(&response)
}

/// A stand-in cockpit's HTTP answer: status 200 and its JSON body.
pub fn parse_response(response: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("status {status:?}"));
    }
    let body: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("body {body:?}: {e}"))?;
    let field = |name: &str| {
        body[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name} in {body}"))
    };
    Ok(Answer {
        member: field("member")?,
        role: field("role")?,
        term: body["term"].as_i64(),
    })
}

/// The longest a look at the lease row (or a reconnect) may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls the lease row of one cluster every `every`; stops on drop.
pub struct LeaseObserver {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<LeaseSample>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseObserver {
    /// `cluster_id` is the lease row's key, `<namespace>/<name>`.
    pub async fn start(database_url: &str, cluster_id: &str, every: Duration) -> Result<Self> {
        if !(database_url.starts_with("postgres") || database_url.starts_with("mysql")) {
            anyhow::bail!("the lease observer reads PostgreSQL or MariaDB, not {database_url}");
        }
        let mut conn = crate::joc::connect(database_url).await?;
        let statement = if database_url.starts_with("postgres") {
            "SELECT holder, term, CAST(CASE WHEN expires_at > now() THEN 1 ELSE 0 END AS BIGINT) \
             FROM joc_ha_lease WHERE cluster_id = $1"
        } else {
            "SELECT holder, term, CAST(CASE WHEN expires_at > NOW(6) THEN 1 ELSE 0 END AS SIGNED) \
             FROM joc_ha_lease WHERE cluster_id = ?"
        };
        // The first look answers whether the statement works at all.
        look(&mut conn, statement, cluster_id)
            .await
            .context("reading the lease row")?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let stop = stop.clone();
            let samples = samples.clone();
            let url = database_url.to_owned();
            let cluster_id = cluster_id.to_owned();
            async move {
                let mut conn = Some(conn);
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    ticks.tick().await;
                    if conn.is_none() {
                        // Bounded, so that stop() never waits on a stalled server.
                        conn = tokio::time::timeout(LOOK_TIMEOUT, crate::joc::connect(&url))
                            .await
                            .ok()
                            .and_then(Result::ok);
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let sent_ns = monotonic_ns();
                    // A failed look is no look: the holdings widen over it.
                    match tokio::time::timeout(LOOK_TIMEOUT, look(c, statement, &cluster_id)).await
                    {
                        Ok(Ok(holder)) => {
                            let sample = LeaseSample {
                                sent_ns,
                                received_ns: monotonic_ns(),
                                holder,
                            };
                            if let Ok(mut samples) = samples.lock() {
                                samples.push(sample);
                            }
                        }
                        Ok(Err(_)) | Err(_) => conn = None,
                    }
                }
            }
        });
        Ok(LeaseObserver {
            stop,
            samples,
            task: Some(task),
        })
    }

    /// Stops polling and returns the looks, in the order taken.
    pub async fn stop(mut self) -> Vec<LeaseSample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Who holds the lease validly now (by the database's clock), and its term.
async fn look(
    conn: &mut sqlx::AnyConnection,
    statement: &'static str,
    cluster_id: &str,
) -> Result<Option<(String, i64)>> {
    let row = sqlx::query(AssertSqlSafe(statement))
        .bind(cluster_id.to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(row) => {
            let holder: Option<String> = row.try_get(0)?;
            let term: i64 = row.try_get(1)?;
            let valid: i64 = row.try_get(2)?;
            holder.filter(|_| valid == 1).map(|h| (h, term))
        }
        None => None,
    })
}

impl Drop for LeaseObserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_with_the_stand_ins_body_is_an_answer_anything_else_an_error() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n{\"member\":\"joc-0\",\"role\":\"active\",\"term\":4,\"active\":true}";
        assert_eq!(
            parse_response(ok),
            Ok(Answer {
                member: "joc-0".into(),
                role: "active".into(),
                term: Some(4)
            })
        );
        let standby =
            b"HTTP/1.1 200 OK\r\n\r\n{\"member\":\"joc-1\",\"role\":\"standby\",\"term\":null}";
        assert_eq!(parse_response(standby).map(|a| a.term), Ok(None));
        for bad in [
            &b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\n\r\nnot json",
            b"HTTP/1.1 200 OK\r\n\r\n{\"role\":\"active\"}",
            b"",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
