//! Real databases for tests: private PostgreSQL and MariaDB servers on free
//! loopback ports (or the machine's, when configured), and SQLite files.
//! Every test gets its own database; servers stop when dropped.
//!
//! Configured servers: set `JOC_HA_TEST_POSTGRES_ADMIN_URL` or
//! `JOC_HA_TEST_MARIADB_ADMIN_URL` to an admin URL (a user allowed to create
//! databases and users) and tests create their databases there instead of
//! starting a private server. Tests that stop or restart the server need a
//! private one and ask for it with [`TestDb::start_private`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tempfile::TempDir;

/// The user tests connect as, and its password; the admin creates it.
pub const TEST_USER: &str = "joc_ha";
pub const TEST_PASSWORD: &str = "joc-ha-test-secret";

/// Database products the lease supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Postgres, Backend::MariaDb, Backend::Sqlite];

    /// The name used in reports and JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::MariaDb => "mariadb",
            Backend::Sqlite => "sqlite",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// One database for one test, on a private or configured server.
pub struct TestDb {
    backend: Backend,
    name: String,
    host_port: Option<(String, u16)>,
    sqlite_path: Option<PathBuf>,
    server: Option<DatabaseServer>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A fresh database: on the configured server for `backend` if there is
    /// one, else on a private server started for this test.
    pub async fn start(backend: Backend) -> Result<TestDb> {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            _ => match configured_admin_url(backend) {
                Some(admin_url) => {
                    let (host, port) = host_port_of(&admin_url)?;
                    let name = fresh_name();
                    create_database(backend, &admin_url, &name).await?;
                    Ok(TestDb {
                        backend,
                        name,
                        host_port: Some((host, port)),
                        sqlite_path: None,
                        server: None,
                        _dir: None,
                    })
                }
                None => Self::start_private(backend).await,
            },
        }
    }

    /// A fresh database on a private server that this test may stop and start.
    pub async fn start_private(backend: Backend) -> Result<TestDb> {
        if backend == Backend::Sqlite {
            return Self::sqlite();
        }
        let server = DatabaseServer::launch(backend).await?;
        let name = fresh_name();
        create_database(backend, &server.admin_url(), &name).await?;
        Ok(TestDb {
            backend,
            name,
            host_port: Some(("127.0.0.1".to_owned(), server.port())),
            sqlite_path: None,
            server: Some(server),
            _dir: None,
        })
    }

    fn sqlite() -> Result<TestDb> {
        let dir = tempfile::Builder::new()
            .prefix("joc-ha-sqlite-")
            .tempdir()?;
        let path = dir.path().join("lease.db");
        Ok(TestDb {
            backend: Backend::Sqlite,
            name: "lease".to_owned(),
            host_port: None,
            sqlite_path: Some(path),
            server: None,
            _dir: Some(dir),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Name of the database (the file stem for SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL with the test user's credentials.
    pub fn url(&self) -> String {
        self.url_with_password(TEST_PASSWORD)
    }

    /// URL with another password, for refused-login tests.
    pub fn url_with_password(&self, password: &str) -> String {
        match (&self.host_port, &self.sqlite_path) {
            (Some((host, port)), _) => {
                let scheme = match self.backend {
                    Backend::Postgres => "postgres",
                    _ => "mysql",
                };
                format!(
                    "{scheme}://{TEST_USER}:{password}@{host}:{port}/{}",
                    self.name
                )
            }
            (None, Some(path)) => format!("sqlite://{}?mode=rwc", path.display()),
            (None, None) => String::new(),
        }
    }

    /// The private server behind this database, if the test started one.
    pub fn server(&self) -> Option<&DatabaseServer> {
        self.server.as_ref()
    }

    pub fn server_mut(&mut self) -> Option<&mut DatabaseServer> {
        self.server.as_mut()
    }

    /// Path of the SQLite file.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }
}

fn fresh_name() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

fn configured_admin_url(backend: Backend) -> Option<String> {
    let var = match backend {
        Backend::Postgres => "JOC_HA_TEST_POSTGRES_ADMIN_URL",
        Backend::MariaDb => "JOC_HA_TEST_MARIADB_ADMIN_URL",
        Backend::Sqlite => return None,
    };
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn host_port_of(url: &str) -> Result<(String, u16)> {
    let after_scheme = url.split("://").nth(1).context("admin URL has no scheme")?;
    let authority = after_scheme.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = host_port
        .rsplit_once(':')
        .context("admin URL must name host:port")?;
    Ok((host.to_owned(), port.parse().context("admin URL port")?))
}

/// Creates the test user (once per server) and a database it owns.
async fn create_database(backend: Backend, admin_url: &str, name: &str) -> Result<()> {
    match backend {
        Backend::Postgres => {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
                    .bind(TEST_USER)
                    .fetch_optional(&mut admin)
                    .await?;
            if exists.is_none() {
                // A concurrent test may create it first; that is fine.
                let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE ROLE {TEST_USER} LOGIN PASSWORD '{TEST_PASSWORD}'"
                )))
                .execute(&mut admin)
                .await;
            }
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE {name} OWNER {TEST_USER}"
            )))
            .execute(&mut admin)
            .await?;
        }
        Backend::MariaDb => {
            let mut admin = mysql_admin_connection(admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE USER IF NOT EXISTS '{TEST_USER}'@'%' IDENTIFIED BY '{TEST_PASSWORD}'; \
                 CREATE DATABASE {name}; \
                 GRANT ALL PRIVILEGES ON {name}.* TO '{TEST_USER}'@'%'"
            )))
            .execute(&mut admin)
            .await?;
        }
        Backend::Sqlite => {}
    }
    Ok(())
}

async fn mysql_admin_connection(admin_url: &str) -> Result<sqlx::MySqlConnection> {
    // Private servers are administered over their Unix socket as root.
    if let Some(socket) = admin_url.strip_prefix("socket:") {
        let options = sqlx::mysql::MySqlConnectOptions::new()
            .socket(socket)
            .username("root");
        return Ok(options.connect().await?);
    }
    Ok(sqlx::MySqlConnection::connect(admin_url).await?)
}

/// A private PostgreSQL or MariaDB server on a free loopback port, with its
/// data in a temporary folder. It can be stopped and started again on the
/// same port with the same data, to play a database outage.
pub struct DatabaseServer {
    backend: Backend,
    port: u16,
    path: PathBuf,
    /// Removes the folder on drop, unless a panic asks to keep it.
    dir: Option<TempDir>,
    child: Option<tokio::process::Child>,
}

impl DatabaseServer {
    /// Initializes a data folder and starts a server on a free port.
    pub async fn launch(backend: Backend) -> Result<DatabaseServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("joc-ha-{}-", backend.name()))
            .tempdir()?;
        let port = free_port()?;
        match backend {
            Backend::Postgres => init_postgres(dir.path()).await?,
            Backend::MariaDb => init_mariadb(dir.path()).await?,
            Backend::Sqlite => bail!("SQLite has no server"),
        }
        let mut server = DatabaseServer {
            backend,
            port,
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            child: None,
        };
        server.start_process().await?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the server writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("server.log")
    }

    /// An admin URL: trusted superuser on loopback (PostgreSQL) or the Unix
    /// socket as root (MariaDB, written `socket:<path>`).
    pub fn admin_url(&self) -> String {
        match self.backend {
            Backend::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            _ => format!("socket:{}", self.socket_path().display()),
        }
    }

    fn socket_path(&self) -> PathBuf {
        self.path.join("mysqld.sock")
    }

    /// Runs SQL as the admin (e.g. to end sessions or read server state).
    pub async fn admin_execute(&self, sql: &str) -> Result<()> {
        match self.backend {
            Backend::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&self.admin_url()).await?;
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut admin)
                    .await?;
            }
            _ => {
                let mut admin = mysql_admin_connection(&self.admin_url()).await?;
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut admin)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stops the server at once, as a crash would (sessions are cut;
    /// committed data stays).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // PostgreSQL's immediate shutdown (SIGQUIT) ends every backend
            // with the postmaster; a SIGKILL would leave them running a while.
            let signal = match self.backend {
                Backend::Postgres => nix::sys::signal::Signal::SIGQUIT,
                _ => nix::sys::signal::Signal::SIGKILL,
            };
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
            child.wait().await?;
        }
        // PostgreSQL's backends outlive a killed postmaster for a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while port_is_open(self.port) {
            if Instant::now() > deadline {
                bail!(
                    "{} still listens on port {} after stop",
                    self.backend.name(),
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data.
    pub async fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.start_process().await
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    async fn start_process(&mut self) -> Result<()> {
        let data = self.path.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = match self.backend {
            Backend::Postgres => {
                let mut c = as_service_user(&postgres_bin("postgres")?, "postgres")?;
                c.arg("-D")
                    .arg(&data)
                    .arg("-p")
                    .arg(self.port.to_string())
                    .arg("-c")
                    .arg("listen_addresses=127.0.0.1")
                    .arg("-c")
                    .arg(format!("unix_socket_directories={}", self.path.display()))
                    .args(["-c", "fsync=off"])
                    .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                    .args([
                        "-c",
                        "shared_buffers=32MB",
                        "-c",
                        "log_min_messages=warning",
                    ]);
                c
            }
            _ => {
                let mut c = tokio::process::Command::new(mariadbd_bin()?);
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", data.display()))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.socket_path().display()))
                    .arg(format!(
                        "--pid-file={}",
                        self.path.join("mysqld.pid").display()
                    ))
                    .arg(format!("--tmpdir={}", self.path.join("tmp").display()))
                    .args(["--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2"])
                    .args(["--innodb-buffer-pool-size=32M", "--max-connections=300"])
                    .args(["--skip-log-bin", "--log-warnings=1"]);
                if is_root() {
                    c.arg("--user=mysql");
                }
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.backend.name()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = match self.backend {
                Backend::Postgres => sqlx::PgConnection::connect(&self.admin_url()).await.is_ok(),
                _ => mysql_admin_connection(&self.admin_url()).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "{} exited ({status}) during start; log {}:\n{}",
                    self.backend.name(),
                    self.log_path().display(),
                    tail(&self.log_path(), 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 60 s; log {}:\n{}",
                    self.backend.name(),
                    self.log_path().display(),
                    tail(&self.log_path(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DatabaseServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "{} data and log kept at {}",
                self.backend.name(),
                kept.display()
            );
        }
    }
}

async fn init_postgres(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    if is_root() {
        chown_to(dir, "postgres")?;
    }
    let output = as_service_user(&postgres_bin("initdb")?, "postgres")?
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .args(["--no-sync", "-E", "UTF8", "--locale=C"])
        .output()
        .await
        .context("cannot run initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // The superuser logs in without a password on loopback; every other
    // user needs one, so refused-login tests are real.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )?;
    Ok(())
}

async fn init_mariadb(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    // Each instance its own tmpdir: a MariaDB server removes every `#sql*`
    // file it finds in its tmpdir at start, including another instance's.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&tmp)?;
    if is_root() {
        chown_to(dir, "mysql")?;
        chown_to(&data, "mysql")?;
        chown_to(&tmp, "mysql")?;
    }
    let mut command = tokio::process::Command::new(which("mariadb-install-db")?);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if is_root() {
        command.arg("--user=mysql");
    }
    let output = command
        .output()
        .await
        .context("cannot run mariadb-install-db")?;
    if !output.status.success() {
        bail!(
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn as_service_user(program: &Path, user: &str) -> Result<tokio::process::Command> {
    // PostgreSQL refuses to run as root. Dropping privileges in the child
    // itself (not through runuser) keeps the server our direct child, so
    // killing it really stops the server.
    let mut c = tokio::process::Command::new(program);
    if is_root() {
        let user = system_user(user)?;
        c.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(c)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn system_user(name: &str) -> Result<nix::unistd::User> {
    nix::unistd::User::from_name(name)?
        .with_context(|| format!("system user {name} missing: install the database package"))
}

fn chown_to(path: &Path, user: &str) -> Result<()> {
    let user = system_user(user)?;
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))?;
    Ok(())
}

/// The newest installed PostgreSQL's binary (Debian keeps them outside PATH).
fn postgres_bin(name: &str) -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .or_else(|| which(name).ok())
        .with_context(|| {
            format!("PostgreSQL's {name} not found: install postgresql (make test does it as root)")
        })
}

fn mariadbd_bin() -> Result<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| which("mariadbd").ok())
        .context("mariadbd not found: install mariadb-server (make test does it as root)")
}

fn which(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} not found on PATH"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_is_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
