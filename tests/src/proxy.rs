//! A TCP proxy the harness controls, to cut one pod off from the database
//! while everything else still reaches it.
//!
//! A cut behaves like a network partition, not like a crash: bytes stop
//! flowing both ways on open connections, but neither end sees them close
//! (so the database keeps the member's session, and its session locks,
//! alive); new connections are accepted and never reach the database.
//! Restoring heals the partition: held bytes flow on, and connections opened
//! during the cut reach the database then (unless their client gave up).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A running proxy from a loopback port to `upstream`; stops on drop.
pub struct TcpProxy {
    address: Ipv4Addr,
    port: u16,
    cut: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<TcpProxy> {
        Self::start_on(Ipv4Addr::LOCALHOST, upstream).await
    }

    /// Listens on a free port of `address` (real nodes' pods reach the
    /// network's root end, not loopback) and forwards to `upstream`.
    pub async fn start_on(address: Ipv4Addr, upstream: SocketAddr) -> Result<TcpProxy> {
        let listener = TcpListener::bind((address, 0))
            .await
            .context("bind the proxy")?;
        let port = listener.local_addr()?.port();
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept_cut = cut.clone();
        let accept_tasks = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let cut = accept_cut.clone();
                let pumps = accept_tasks.clone();
                let task = tokio::spawn(async move {
                    // Nothing reaches the database while cut.
                    open(&cut).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pump(client_read, server_write, cut.clone()));
                    let down = tokio::spawn(pump(server_read, client_write, cut));
                    if let Ok(mut list) = pumps.lock() {
                        list.push(up.abort_handle());
                        list.push(down.abort_handle());
                    }
                    let _ = tokio::join!(up, down);
                });
                if let Ok(mut list) = accept_tasks.lock() {
                    list.retain(|t| !t.is_finished());
                    list.push(task.abort_handle());
                }
            }
        });
        if let Ok(mut list) = tasks.lock() {
            list.push(accept.abort_handle());
        }
        Ok(TcpProxy {
            address,
            port,
            cut,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Partitions: no byte passes either way until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals the partition.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> Result<String> {
        via(url, self.address, self.port)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Ok(mut list) = self.tasks.lock() {
            for task in list.drain(..) {
                task.abort();
            }
        }
    }
}

/// Waits until the proxy is not cut.
async fn open(cut: &watch::Sender<bool>) {
    let mut state = cut.subscribe();
    let _ = state.wait_for(|cut| !*cut).await;
}

/// Copies one direction, holding bytes while cut; closes the write half at
/// the read half's end (seen only while not cut, as in a partition).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<watch::Sender<bool>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        open(&cut).await;
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        open(&cut).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    open(&cut).await;
    let _ = to.shutdown().await;
}

/// `url` (`scheme://user:password@host:port/path?query`) pointing at
/// 127.0.0.1:`port` instead.
pub fn via_port(url: &str, port: u16) -> Result<String> {
    via(url, Ipv4Addr::LOCALHOST, port)
}

fn via(url: &str, address: Ipv4Addr, port: u16) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL with a scheme")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let credentials = &authority[..host_start];
    Ok(format!("{scheme}://{credentials}{address}:{port}{tail}"))
}

/// Host and port of a database URL, resolved to a socket address.
pub fn upstream_of(url: &str) -> Result<SocketAddr> {
    let (_, rest) = url.split_once("://").context("a URL with a scheme")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = host_port
        .rsplit_once(':')
        .context("a URL with an explicit port")?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(SocketAddr::new(
        host.parse().context("a URL with an IP address")?,
        port.parse().context("a numeric port")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_urls() -> Result<()> {
        assert_eq!(
            via_port("postgres://u:p@127.0.0.1:5432/db?sslmode=disable", 7)?,
            "postgres://u:p@127.0.0.1:7/db?sslmode=disable"
        );
        assert_eq!(via_port("mysql://u@h:1/x", 9)?, "mysql://u@127.0.0.1:9/x");
        assert_eq!(
            upstream_of("mysql://u:p@127.0.0.1:3306/db")?,
            "127.0.0.1:3306".parse()?
        );
        Ok(())
    }

    #[tokio::test]
    async fn forwards_holds_while_cut_and_heals() -> Result<()> {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await?;
        let upstream = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(upstream).await?;
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).await?;
        let mut buf = [0u8; 5];
        client.write_all(b"hello").await?;
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");

        proxy.cut();
        client.write_all(b"again").await?;
        let held = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            client.read_exact(&mut buf),
        )
        .await;
        assert!(held.is_err(), "nothing passes while cut");
        // A new connection is accepted but reaches nothing.
        let mut late = TcpStream::connect(("127.0.0.1", proxy.port())).await?;
        late.write_all(b"later").await?;

        proxy.restore();
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"again", "held bytes flow on after the cut");
        late.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"later");
        Ok(())
    }
}
