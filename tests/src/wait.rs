//! Bounded polling for conditions. Tests wait on what they expect to observe,
//! never on a fixed sleep.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// Polls `check` every `poll` until it returns `Some`, for at most `timeout`.
/// The error names `what` and how long was waited.
pub async fn wait_for<F, Fut, T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_ok(what, timeout, poll, || {
        let attempt = check();
        async move { attempt.await.ok_or("condition not met yet") }
    })
    .await
}

/// Polls `check` every `poll` until it returns `Ok`, for at most `timeout`.
/// An `Err` means "not yet"; the last one is the observation reported on timeout,
/// so make it say what was seen ("2 of 3 pods ready: ...").
pub async fn wait_for_ok<F, Fut, T, E>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u32;
    let mut last = "none (no check finished)".to_owned();
    loop {
        attempts += 1;
        // A check that hangs (an API call against a frozen server) must not outlive the deadline.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let hung = match tokio::time::timeout(remaining, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(observation)) => {
                last = observation.to_string();
                false
            }
            Err(_) => true,
        };
        if Instant::now() >= deadline {
            let hung = if hung {
                " (the final check was still running at the deadline)"
            } else {
                ""
            };
            bail!(
                "timed out after {:.1?} ({attempts} checks) waiting for {what}; last observation: {last}{hung}",
                started.elapsed()
            );
        }
        let pause = poll.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// Status code of a plain-HTTP GET (`http://127.0.0.1:8080/path`), for readiness
/// probes and health endpoints on loopback. No TLS, no redirects.
pub async fn http_get_status(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    Ok(plain_get(url, timeout, false).await?.0)
}

/// Status code and body of a plain-HTTP GET on loopback (the server closes
/// the connection after the response; no chunked encoding expected).
pub async fn http_get(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let (status, response) = plain_get(url, timeout, true).await?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sends `GET` with `Connection: close`; reads the status line, or the whole
/// response when `whole`.
async fn plain_get(url: &str, timeout: Duration, whole: bool) -> anyhow::Result<(u16, Vec<u8>)> {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not a plain http url: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::with_capacity(256);
        let mut buf = [0u8; 4096];
        while whole || !response.contains(&b'\n') {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("GET {url}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {url}: not an HTTP status line: {status_line:?}"))?;
    Ok((status, response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_first_value() -> anyhow::Result<()> {
        let calls = AtomicU32::new(0);
        let value = wait_for(
            "third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || async { (calls.fetch_add(1, Ordering::SeqCst) == 2).then_some(42) },
        )
        .await?;
        assert_eq!(value, 42);
        Ok(())
    }

    #[tokio::test]
    async fn timeout_names_what_and_last_observation() {
        let error = wait_for_ok(
            "the moon",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { Err::<(), _>("saw cheese") },
        )
        .await
        .expect_err("must time out");
        let message = error.to_string();
        assert!(
            message.contains("the moon") && message.contains("saw cheese"),
            "{message}"
        );
    }
}
