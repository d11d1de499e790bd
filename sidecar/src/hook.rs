//! The cockpit container's preStop hook, run from the sidecar's own
//! executable: `install-hook` (an init container) copies the executable
//! into an emptyDir the cockpit mounts read-only; `prestop` (the cockpit's
//! `exec` preStop hook) calls the sidecar's loopback `/prestop` and waits
//! for its answer. A kubelet runs `httpGet` hooks against the pod IP, which
//! a loopback-only listener does not answer: hence an `exec` hook.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::PRESTOP_LIMIT_MAX;

/// How long `prestop` waits for the sidecar's answer: the sidecar's own
/// bound plus time to connect and answer (the kubelet cuts the hook at the
/// grace period anyway).
pub const CLIENT_TIMEOUT: Duration = PRESTOP_LIMIT_MAX.saturating_add(Duration::from_secs(5));

/// The answer cannot be longer than this; more is not the sidecar's.
const MAX_ANSWER: u64 = 64 * 1024;

/// `joc-ha-sidecar prestop` and `joc-ha-sidecar install-hook --dir DIR`,
/// parsed apart from the sidecar's own flags: the hook runs in the
/// cockpit's environment, which no `JOC_HA_*` setting of the sidecar's may
/// spoil.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "joc-ha-sidecar", version)]
pub struct HookCli {
    #[command(subcommand)]
    pub command: HookCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HookCommand {
    /// The cockpit's preStop hook: asks the sidecar on its loopback address
    /// to finish the hand-over, waits for its answer, then exits 0
    /// (non-zero with a line on stderr when it cannot).
    Prestop {
        /// The sidecar's loopback listener (its JOC_HA_LOCAL_ADDR).
        #[arg(long, env = "JOC_HA_LOCAL_ADDR", default_value = "127.0.0.1:9087")]
        local_addr: String,
    },
    /// The `joc-ha-hook` init container: copies this executable into DIR,
    /// from where the cockpit container runs it as its preStop hook.
    InstallHook {
        /// The folder (an emptyDir shared with the cockpit) to copy into.
        #[arg(long)]
        dir: PathBuf,
    },
}

impl HookCli {
    /// The hook's command line, when `args` (without the program name)
    /// starts with one of its subcommands.
    pub fn is_hook_command(first: Option<&str>) -> bool {
        matches!(first, Some("prestop" | "install-hook"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "cannot reach the sidecar on {addr}: {source}; JOC stops without waiting for the hand-over (is the joc-ha-sidecar container running? JOC_HA_LOCAL_ADDR must name its loopback listener)"
    )]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the sidecar on {addr} did not answer within {timeout:?}; JOC stops now")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("reading the sidecar's answer from {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the sidecar on {addr} answered {answer:?} instead of HTTP 200")]
    Refused { addr: SocketAddr, answer: String },
    #[error("cannot find this program's own executable: {0}")]
    OwnExecutable(#[source] std::io::Error),
    #[error(
        "cannot copy {from} to {to}: {source}; the cockpit's preStop hook needs it (is the {volume} volume mounted writable here?)"
    )]
    Copy {
        from: PathBuf,
        to: PathBuf,
        volume: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// `joc-ha-sidecar prestop`: GET /prestop on `addr`; the sidecar's answer
/// body on HTTP 200.
pub async fn prestop(addr: SocketAddr, timeout: Duration) -> Result<String, HookError> {
    match tokio::time::timeout(timeout, get(addr, "/prestop")).await {
        Ok(Ok((200, body))) => Ok(body),
        Ok(Ok((code, _))) => Err(HookError::Refused {
            addr,
            answer: format!("HTTP {code}"),
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(HookError::Timeout { addr, timeout }),
    }
}

/// GET `path` on `addr`: the status code and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), HookError> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| HookError::Connect { addr, source })?;
    let io = |source| HookError::Io { addr, source };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    match parse_answer(&answer) {
        Some((code, body)) => Ok((code, body.to_owned())),
        None => Err(HookError::Refused {
            addr,
            answer: answer.lines().next().unwrap_or_default().to_owned(),
        }),
    }
}

/// An HTTP/1.x answer's status code and body (`Connection: close`, so the
/// body is the rest; axum sends these short bodies unchunked).
pub fn parse_answer(answer: &str) -> Option<(u16, &str)> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    Some((code, body))
}

/// `joc-ha-sidecar install-hook --dir DIR`: copies this executable to
/// `DIR/joc-ha-sidecar` (through a temporary name, so a restarted init
/// container never leaves a half-written program), readable and executable
/// by every user: the cockpit runs as another user than this container may.
pub fn install(dir: &Path) -> Result<PathBuf, HookError> {
    let from = std::env::current_exe().map_err(HookError::OwnExecutable)?;
    install_from(&from, dir)
}

pub fn install_from(from: &Path, dir: &Path) -> Result<PathBuf, HookError> {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(joc_ha_crds::names::pod::HOOK_BIN);
    let partial = dir.join(format!(".{}.partial", joc_ha_crds::names::pod::HOOK_BIN));
    let copy_error = |source| HookError::Copy {
        from: from.to_owned(),
        to: to.clone(),
        volume: joc_ha_crds::names::pod::HOOK_BIN_VOLUME,
        source,
    };
    // A partial copy left by a killed earlier run is read-only: remove it.
    let _ = std::fs::remove_file(&partial);
    std::fs::copy(from, &partial).map_err(copy_error)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
        .map_err(copy_error)?;
    std::fs::rename(&partial, &to).map_err(copy_error)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_command_lines_parse_apart_from_the_sidecars_flags() {
        use clap::Parser as _;
        assert!(HookCli::is_hook_command(Some("prestop")));
        assert!(HookCli::is_hook_command(Some("install-hook")));
        assert!(!HookCli::is_hook_command(Some("render-joc-config")));
        assert!(!HookCli::is_hook_command(Some("--pod-name")));
        assert!(!HookCli::is_hook_command(None));
        let cli = HookCli::try_parse_from(["joc-ha-sidecar", "install-hook", "--dir", "/x"])
            .expect("parses");
        assert!(matches!(cli.command, HookCommand::InstallHook { dir } if dir == Path::new("/x")));
        let cli = HookCli::try_parse_from(["joc-ha-sidecar", "prestop", "--local-addr", "[::1]:1"])
            .expect("parses");
        assert!(
            matches!(cli.command, HookCommand::Prestop { local_addr } if local_addr == "[::1]:1")
        );
    }

    #[test]
    fn answers_are_read_as_status_and_body() {
        let cases: &[(&str, Option<(u16, &str)>)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhanded over",
                Some((200, "handed over")),
            ),
            ("HTTP/1.0 404 Not Found\r\n\r\n", Some((404, ""))),
            (
                "HTTP/1.1 503 Service Unavailable\r\n\r\nno",
                Some((503, "no")),
            ),
            // Not HTTP, cut short, or no status code: not an answer.
            ("SSH-2.0-OpenSSH\r\n\r\n", None),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5", None),
            ("HTTP/1.1 abc\r\n\r\n", None),
            ("", None),
        ];
        for (answer, expected) in cases {
            assert_eq!(parse_answer(answer), *expected, "{answer:?}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_that_names_the_address() {
        // A port just freed: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = prestop(addr, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, HookError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[tokio::test]
    async fn a_silent_sidecar_is_a_timeout_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
        });
        let error = prestop(addr, Duration::from_millis(300))
            .await
            .expect_err("no answer");
        assert!(matches!(error, HookError::Timeout { .. }), "{error:?}");
    }

    #[test]
    fn install_copies_an_executable_file_and_replaces_an_old_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("source");
        std::fs::write(&from, b"program v1").expect("write");
        let out = dir.path().join("bin");
        std::fs::create_dir(&out).expect("mkdir");
        let to = install_from(&from, &out).expect("install");
        assert_eq!(std::fs::read(&to).expect("read"), b"program v1");
        let mode = std::fs::metadata(&to).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        std::fs::write(&from, b"program v2").expect("write");
        install_from(&from, &out).expect("install again");
        assert_eq!(std::fs::read(&to).expect("read"), b"program v2");
        let missing = install_from(&from, &dir.path().join("absent"));
        assert!(
            matches!(missing, Err(HookError::Copy { .. })),
            "{missing:?}"
        );
    }
}
