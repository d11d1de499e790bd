//! The lease statements, one module per database product, behind one enum.
//! Every operation is a single conditional statement (or, where a product
//! lacks `RETURNING`, a statement whose affected-row count is the answer), so
//! each is atomic on its own. All times are computed by the database in the
//! statement itself (SQLite: see its module).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::config::{LeaseConfig, MemberKind};
use super::error::LeaseError;
use super::url::{DatabaseUrl, Options};

pub(crate) mod mysql;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// How long opening a connection may take before it counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a waiter blocks on a session lock per statement. Bounds how long
/// a wait on a stale key can last; costs one statement per period.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);
/// NOTIFY channel on PostgreSQL.
pub(crate) const CHANNEL: &str = "joc_ha_lease";

/// What every statement needs: names, timing in milliseconds, the URL (for
/// redacted messages) and the statement counter.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub cluster: String,
    pub member: String,
    pub kind: MemberKind,
    pub ttl_ms: i64,
    /// MariaDB/MySQL: a holder whose session lock is gone may be replaced
    /// this long after its last renew (hold + margin).
    pub steal_after_ms: i64,
    /// A member heartbeat younger than this is fresh.
    pub fresh_ms: i64,
    pub op_timeout: Duration,
    pub migrate: bool,
    pub url: DatabaseUrl,
    pub statements: Arc<AtomicU64>,
}

impl Ctx {
    pub(crate) fn new(config: &LeaseConfig, url: DatabaseUrl, statements: Arc<AtomicU64>) -> Ctx {
        Ctx {
            cluster: config.cluster_id.clone(),
            member: config.member.clone(),
            kind: config.kind,
            ttl_ms: millis(config.ttl),
            steal_after_ms: millis(config.hold() + config.margin()),
            fresh_ms: millis(config.freshness()),
            op_timeout: config.ttl.max(Duration::from_secs(2)),
            migrate: config.migrate,
            url,
            statements,
        }
    }

    pub(crate) fn target(&self) -> String {
        self.url.redacted().to_owned()
    }

    /// Runs one statement with a time limit, counting it and turning errors
    /// into [`LeaseError`]s.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout, statement).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(op, &error)),
            Err(_) => Err(LeaseError::Timeout {
                op,
                target: self.target(),
                timeout,
            }),
        }
    }

    /// Maps an error of a statement on an open connection.
    pub(crate) fn classify(&self, op: &'static str, error: &sqlx::Error) -> LeaseError {
        let detail = self.url.scrub(&error_detail(error));
        let lost = || LeaseError::ConnectionLost {
            op,
            target: self.target(),
            detail: detail.clone(),
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => lost(),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if is_connection_code(&code) {
                    lost()
                } else if is_missing_table(&code, db.message()) {
                    LeaseError::SchemaMissing {
                        target: self.target(),
                        backend: self.url.kind().migrations_dir(),
                    }
                } else {
                    LeaseError::Database {
                        op,
                        target: self.target(),
                        detail,
                    }
                }
            }
            _ => LeaseError::Database {
                op,
                target: self.target(),
                detail,
            },
        }
    }

    /// Maps an error while opening a connection.
    pub(crate) fn classify_connect(&self, error: &sqlx::Error) -> LeaseError {
        let detail = self.url.scrub(&error_detail(error));
        let target = self.target();
        match error {
            sqlx::Error::Io(io) => LeaseError::Unreachable {
                target,
                detail: match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        "connection refused (nothing listens on that port)".to_owned()
                    }
                    _ => detail,
                },
            },
            sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
                LeaseError::Unreachable { target, detail }
            }
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    // PostgreSQL invalid_password / invalid_authorization_specification,
                    // MySQL access denied (to the server / to the database).
                    "28P01" | "28000" | "1045" | "1044" | "1698" => LeaseError::LoginRefused {
                        target,
                        user: self.url.user().to_owned(),
                        detail,
                    },
                    "3D000" | "1049" => LeaseError::DatabaseNotFound {
                        target,
                        database: self.url.database().to_owned(),
                    },
                    // The server is starting up or shutting down.
                    "57P03" | "57P01" | "1053" => LeaseError::Unreachable { target, detail },
                    // SQLite: unable to open the database file.
                    "14" => LeaseError::Unreachable {
                        target,
                        detail: format!("cannot open the database file: {detail}"),
                    },
                    _ => LeaseError::Database {
                        op: "connect",
                        target,
                        detail,
                    },
                }
            }
            sqlx::Error::Configuration(_) => LeaseError::InvalidUrl {
                url: target,
                reason: detail,
            },
            _ => LeaseError::Database {
                op: "connect",
                target,
                detail,
            },
        }
    }

    /// Opens a connection within [`CONNECT_TIMEOUT`].
    pub(crate) async fn open<T>(
        &self,
        connect: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(self.classify_connect(&error)),
            Err(_) => Err(LeaseError::Unreachable {
                target: self.target(),
                detail: format!("no answer within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    pub(crate) fn migration_error(&self, error: &sqlx::migrate::MigrateError) -> LeaseError {
        if let sqlx::migrate::MigrateError::Execute(inner) = error
            && !matches!(inner, sqlx::Error::Database(_))
        {
            return self.classify("migrate", inner);
        }
        LeaseError::Migration {
            target: self.target(),
            detail: self.url.scrub(&error.to_string()),
        }
    }

    pub(crate) fn schema_missing(&self) -> LeaseError {
        LeaseError::SchemaMissing {
            target: self.target(),
            backend: self.url.kind().migrations_dir(),
        }
    }
}

fn error_detail(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn is_connection_code(code: &str) -> bool {
    // PostgreSQL class 08 (connection exception) and admin/crash shutdown;
    // MariaDB connection killed, server shutdown, lost connection.
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "1927" | "1053" | "2006" | "2013"
        )
}

fn is_missing_table(code: &str, message: &str) -> bool {
    code == "42P01" || code == "1146" || message.contains("no such table")
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A fresh session key: random, positive, below 2^62 (so PostgreSQL's split
/// into two 32-bit halves never touches the sign bit).
pub(crate) fn new_session_key() -> i64 {
    let key = (rand::random::<u64>() >> 2) | 1;
    i64::try_from(key).unwrap_or(1)
}

/// The lease row as one statement saw it. Times are relative to the
/// database's `now` in that statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseView {
    pub holder: Option<String>,
    pub holder_session: Option<i64>,
    pub term: i64,
    /// `expires_at - now`; zero or less when expired.
    pub expires_in_ms: i64,
    /// `now - renewed_at`.
    pub renewed_age_ms: Option<i64>,
    /// The database's `now`: Unix milliseconds (SQLite: the host's monotonic clock).
    pub db_now_ms: i64,
}

impl LeaseView {
    /// Held and not expired.
    pub(crate) fn is_live(&self) -> bool {
        self.holder.is_some() && self.expires_in_ms > 0
    }
}

/// A member as listed by [`crate::lease::ElectorHandle::members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub member: String,
    pub kind: MemberKind,
    pub ready: bool,
    /// Time since its last heartbeat (for the holder: since its last renew,
    /// if that is later), by database time. `None` when unknown.
    pub heartbeat_age: Option<Duration>,
    /// Heartbeat younger than the TTL.
    pub fresh: bool,
    /// Holds the lease now (held and not expired).
    pub holder: bool,
}

pub(crate) fn member_row(
    ctx: &Ctx,
    member: String,
    kind: &str,
    ready: bool,
    heartbeat_age_ms: Option<i64>,
    holder: bool,
    renewed_age_ms: Option<i64>,
) -> MemberRow {
    let age = match (holder, heartbeat_age_ms, renewed_age_ms) {
        (true, Some(hb), Some(renewed)) => Some(hb.min(renewed)),
        (true, None, renewed) => renewed,
        (_, hb, _) => hb,
    };
    MemberRow {
        member,
        kind: MemberKind::parse(kind).unwrap_or(MemberKind::ApiServer),
        ready,
        heartbeat_age: age.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        fresh: age.is_some_and(|ms| ms < ctx.fresh_ms),
        holder,
    }
}

/// Something the session connection reported by itself.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// A NOTIFY for this cluster (PostgreSQL).
    Notified,
    /// The session connection is gone.
    Lost(LeaseError),
}

/// The outcome of a blocking wait for a session lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockWait {
    Acquired,
    TimedOut,
    Canceled,
}

/// One open session with the database: the connection that carries this
/// member's session lock and all its lease statements.
pub(crate) enum Store {
    Postgres(postgres::PgStore),
    MySql(mysql::MySqlStore),
    Sqlite(sqlite::SqliteStore),
}

/// The second connection of a member on PostgreSQL and MariaDB: blocks on
/// the holder's session lock to learn at once when that session ends.
pub(crate) enum WaiterConn {
    Postgres(postgres::PgWaiter),
    MySql(mysql::MySqlWaiter),
}

macro_rules! each {
    ($self:expr, $store:ident => $body:expr) => {
        match $self {
            Store::Postgres($store) => $body,
            Store::MySql($store) => $body,
            Store::Sqlite($store) => $body,
        }
    };
}

impl Store {
    /// Opens a session: connects, applies migrations (unless disabled),
    /// checks the schema, takes a fresh session lock and registers the member.
    /// Also returns the waiter connection where the product has one.
    pub(crate) async fn connect(ctx: Arc<Ctx>) -> Result<(Store, Option<WaiterConn>), LeaseError> {
        match ctx.url.options.clone() {
            Options::Postgres(options) => {
                let (store, waiter) = postgres::PgStore::connect(ctx, options).await?;
                Ok((Store::Postgres(store), waiter.map(WaiterConn::Postgres)))
            }
            Options::MySql(options) => {
                let (store, waiter) = mysql::MySqlStore::connect(ctx, options).await?;
                Ok((Store::MySql(store), waiter.map(WaiterConn::MySql)))
            }
            Options::Sqlite(options) => Ok((
                Store::Sqlite(sqlite::SqliteStore::connect(ctx, options).await?),
                None,
            )),
        }
    }

    /// This session's key (the lock a live session holds; SQLite: just an id).
    pub(crate) fn key(&self) -> i64 {
        each!(self, s => s.key)
    }

    /// Whether standbys can learn of a holder's death from its session lock.
    pub(crate) fn has_session_locks(&self) -> bool {
        !matches!(self, Store::Sqlite(_))
    }

    /// Whether the early take-over after a session ends must also wait for
    /// `hold + margin` after the last renew (the holder cannot see its own
    /// session end).
    pub(crate) fn steal_needs_hold(&self) -> bool {
        matches!(self, Store::MySql(_))
    }

    /// Writes the member heartbeat; PostgreSQL and SQLite also read the lease
    /// in the same statement.
    pub(crate) async fn heartbeat(&mut self, ready: bool) -> Result<Option<LeaseView>, LeaseError> {
        each!(self, s => s.heartbeat(ready).await)
    }

    /// Reads the lease row (`None` if the row is missing).
    pub(crate) async fn read(&mut self) -> Result<Option<LeaseView>, LeaseError> {
        each!(self, s => s.read().await)
    }

    /// Creates the lease row if missing and upserts the member row.
    pub(crate) async fn register(&mut self, ready: bool) -> Result<(), LeaseError> {
        each!(self, s => s.register(ready).await)
    }

    /// Takes the lease if it is free or expired (or still ours from an
    /// earlier term) and still has term `term`. The new term is `term + 1`.
    pub(crate) async fn acquire(&mut self, term: i64) -> Result<bool, LeaseError> {
        each!(self, s => s.acquire(term).await)
    }

    /// Takes the lease from the holder with session `key` at `term`, whose
    /// session lock was seen released.
    pub(crate) async fn steal(&mut self, term: i64, key: i64) -> Result<bool, LeaseError> {
        match self {
            Store::Postgres(s) => s.steal(term, key).await,
            Store::MySql(s) => s.steal(term, key).await,
            Store::Sqlite(_) => Ok(false),
        }
    }

    /// Extends our lease at `term` by one TTL from the database's now.
    pub(crate) async fn renew(&mut self, term: i64, timeout: Duration) -> Result<bool, LeaseError> {
        each!(self, s => s.renew(term, timeout).await)
    }

    /// Ends our lease at `term` now (keeping the term, so the next holder
    /// gets `term + 1`) and wakes the standbys.
    pub(crate) async fn release(&mut self, term: i64) -> Result<bool, LeaseError> {
        each!(self, s => s.release(term).await)
    }

    /// Gives our lease at `term` to `target` (fresh, ready member) with term
    /// `term + 1`, and wakes the standbys.
    pub(crate) async fn hand_over(&mut self, term: i64, target: &str) -> Result<bool, LeaseError> {
        each!(self, s => s.hand_over(term, target).await)
    }

    pub(crate) async fn set_ready(&mut self, ready: bool) -> Result<(), LeaseError> {
        each!(self, s => s.set_ready(ready).await)
    }

    pub(crate) async fn members(&mut self) -> Result<Vec<MemberRow>, LeaseError> {
        each!(self, s => s.members().await)
    }

    /// Interrupts the waiter connection's blocked lock wait.
    pub(crate) async fn cancel_wait(&mut self, backend_id: i64) -> Result<(), LeaseError> {
        match self {
            Store::Postgres(s) => s.cancel_wait(backend_id).await,
            Store::MySql(s) => s.cancel_wait(backend_id).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// Waits for something the session reports by itself. Cancel-safe.
    /// Pending forever where the product has no such channel.
    pub(crate) async fn next_event(&mut self) -> SessionEvent {
        match self {
            Store::Postgres(s) => s.next_event().await,
            _ => std::future::pending().await,
        }
    }
}

impl WaiterConn {
    pub(crate) async fn connect(ctx: &Ctx) -> Result<WaiterConn, LeaseError> {
        match &ctx.url.options {
            Options::Postgres(options) => Ok(WaiterConn::Postgres(
                postgres::PgWaiter::connect(ctx, options.clone()).await?,
            )),
            Options::MySql(options) => Ok(WaiterConn::MySql(
                mysql::MySqlWaiter::connect(ctx, options.clone()).await?,
            )),
            Options::Sqlite(_) => Err(LeaseError::Database {
                op: "waiter",
                target: ctx.target(),
                detail: "SQLite has no session locks".to_owned(),
            }),
        }
    }

    /// The server's id of this connection (PostgreSQL pid, MySQL connection id).
    pub(crate) fn backend_id(&self) -> i64 {
        match self {
            WaiterConn::Postgres(w) => w.backend_id,
            WaiterConn::MySql(w) => w.backend_id,
        }
    }

    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        match self {
            WaiterConn::Postgres(w) => w.try_lock(ctx, key).await,
            WaiterConn::MySql(w) => w.try_lock(ctx, key).await,
        }
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        match self {
            WaiterConn::Postgres(w) => w.lock(ctx, key).await,
            WaiterConn::MySql(w) => w.lock(ctx, key).await,
        }
    }

    pub(crate) async fn unlock(&mut self, ctx: &Ctx, key: i64) -> Result<(), LeaseError> {
        match self {
            WaiterConn::Postgres(w) => w.unlock(ctx, key).await,
            WaiterConn::MySql(w) => w.unlock(ctx, key).await,
        }
    }
}
