//! The lease statements behind one [`Store`]. Every operation is a single
//! conditional statement (or, where a product lacks `RETURNING`, a statement
//! whose affected-row count is the answer), so each is atomic on its own.
//! All times are computed by the database in the statement itself (SQLite:
//! see its module).
//!
//! A product is a [`Dialect`]: its statements (SQL text and parameter
//! order, run by the shared code in `sql.rs`) and its [`Capabilities`],
//! which is all the elector asks of it. The product modules add only what
//! really differs: opening the session, its lock, the waiter connection.

use std::sync::Arc;
use std::time::Duration;

use super::config::MemberKind;
use super::error::LeaseError;
use super::url::Options;
use sql::{Args, Param, Stmt, Value};

mod ctx;
pub(crate) mod mysql;
pub(crate) mod postgres;
mod sql;
pub(crate) mod sqlite;
mod waiter;

pub(crate) use waiter::{LockWait, WaiterConn};

pub(crate) use ctx::Ctx;

/// How long opening a connection may take before it counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a waiter blocks on a session lock per statement. Bounds how long
/// a wait on a stale key can last; costs one statement per period.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);
/// NOTIFY channel on PostgreSQL.
pub(crate) const CHANNEL: &str = "joc_ha_lease";

/// What a product can do. The elector branches on these, never on the
/// product's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// Every session holds a lock that the server frees when the session
    /// ends, so a standby's waiter connection learns at once that the
    /// holder's process died (connection-bound detection): early take-over.
    pub session_locks: bool,
    /// The holder cannot see its own session end (no asynchronous message on
    /// an idle connection). Its role is then also bounded by `hold` after its
    /// last verified renew, and an early take-over waits until `hold +
    /// margin` after that renew (checked in SQL) instead of a short guard.
    pub holder_blind_to_session_end: bool,
    /// The heartbeat statement returns the lease row too, so standbys read
    /// the lease once per renew interval at no extra cost.
    pub heartbeat_reads_lease: bool,
    /// Release and hand-over move the holder to a new session lock, which
    /// wakes the waiters (a product without NOTIFY).
    pub rekey_wakes_waiters: bool,
}

/// A product's statements and capabilities.
#[derive(Debug)]
pub(crate) struct Dialect {
    pub caps: Capabilities,
    /// Writes the member heartbeat (and reads the lease if the product can).
    pub heartbeat: Stmt,
    pub read: Stmt,
    /// Creates the lease row if missing and upserts the member row.
    pub register: &'static [Stmt],
    pub acquire: Stmt,
    /// Take-over from a holder whose session ended (products with session locks).
    pub steal: Option<Stmt>,
    pub renew: Stmt,
    pub release: Stmt,
    pub hand_over: Stmt,
    pub set_ready: Stmt,
    pub members: Stmt,
    /// js7 mode: claims the database for this cluster unless claimed.
    pub claim: Stmt,
    /// js7 mode: the cluster the database belongs to.
    pub owner: Stmt,
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

/// The session connection of a product.
pub(crate) enum Conn {
    Postgres(postgres::Session),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// Runs `$body` with `$c` bound to the connection's executor.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Postgres(session) => {
                let $c = &mut session.listener;
                $body
            }
            Conn::MySql($c) => $body,
            Conn::Sqlite($c) => $body,
        }
    };
}

/// Who this session is: the values of [`Param`]s that are not per call.
#[derive(Debug)]
pub(crate) struct Me {
    /// This session's key (the lock a live session holds; SQLite: just an id).
    pub key: i64,
    /// MySQL: the name of the session lock.
    pub lock: String,
    /// SQLite: the boot id.
    pub boot: String,
}

/// One open session with the database: the connection that carries this
/// member's session lock and all its lease statements.
pub(crate) struct Store {
    ctx: Arc<Ctx>,
    dialect: &'static Dialect,
    conn: Conn,
    me: Me,
}

fn values<'a>(
    ctx: &'a Ctx,
    me: &'a Me,
    stmt: &Stmt,
    args: Args<'a>,
) -> Result<Vec<Value<'a>>, LeaseError> {
    let now = if stmt.params.contains(&Param::Now) {
        sqlite::now_ms()?
    } else {
        0
    };
    let micros = |ms: i64| Value::Int(ms.saturating_mul(1000));
    Ok(stmt
        .params
        .iter()
        .map(|param| match param {
            Param::Cluster => Value::Text(&ctx.cluster),
            Param::Member => Value::Text(&ctx.member),
            Param::Kind => Value::Text(ctx.kind.as_str()),
            Param::Ready => Value::Bool(args.ready),
            Param::Key => Value::Int(me.key),
            Param::Term => Value::Int(args.term),
            Param::Target => Value::Text(args.target),
            Param::HolderKey => Value::Int(args.holder_key),
            Param::TtlMs => Value::Int(ctx.ttl_ms),
            Param::FreshMs => Value::Int(ctx.fresh_ms),
            Param::TtlUs => micros(ctx.ttl_ms),
            Param::FreshUs => micros(ctx.fresh_ms),
            Param::StealAfterUs => micros(args.steal_after_ms.unwrap_or(ctx.steal_after_ms)),
            Param::Lock => Value::Text(&me.lock),
            Param::Boot => Value::Text(&me.boot),
            Param::Now => Value::Int(now),
        })
        .collect())
}

impl Store {
    /// Opens a session: connects, applies migrations (unless disabled),
    /// checks the schema, takes a fresh session lock and registers the member.
    /// Also returns the waiter connection where the product has one.
    pub(crate) async fn connect(ctx: Arc<Ctx>) -> Result<(Store, Option<WaiterConn>), LeaseError> {
        let (dialect, conn, me, waiter) = match ctx.url.options.clone() {
            Options::Postgres(options) => {
                let (conn, me, waiter) = postgres::connect(&ctx, options).await?;
                (
                    &postgres::DIALECT,
                    conn,
                    me,
                    waiter.map(WaiterConn::Postgres),
                )
            }
            Options::MySql(options) => {
                let (conn, me, waiter) = mysql::connect(&ctx, options).await?;
                (&mysql::DIALECT, conn, me, waiter.map(WaiterConn::MySql))
            }
            Options::Sqlite(options) => {
                let (conn, me) = sqlite::connect(&ctx, options).await?;
                (&sqlite::DIALECT, conn, me, None)
            }
        };
        Ok((
            Store {
                ctx,
                dialect,
                conn,
                me,
            },
            waiter,
        ))
    }

    /// This session's key.
    pub(crate) fn key(&self) -> i64 {
        self.me.key
    }

    pub(crate) fn caps(&self) -> Capabilities {
        self.dialect.caps
    }

    fn dialect(&self) -> &'static Dialect {
        self.dialect
    }

    async fn exec(
        &mut self,
        stmt: &Stmt,
        args: Args<'_>,
        timeout: Duration,
    ) -> Result<u64, LeaseError> {
        let values = values(&self.ctx, &self.me, stmt, args)?;
        let ctx = &*self.ctx;
        on_conn!(&mut self.conn, c => sql::execute(ctx, stmt, timeout, &values, c).await)
    }

    async fn fetch<T>(&mut self, stmt: &Stmt, args: Args<'_>) -> Result<Vec<T>, LeaseError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        let values = values(&self.ctx, &self.me, stmt, args)?;
        let ctx = &*self.ctx;
        let timeout = ctx.op_timeout;
        on_conn!(&mut self.conn, c => sql::fetch(ctx, stmt, timeout, &values, c).await)
    }

    /// A conditional update: true if it changed the lease row.
    async fn update(&mut self, stmt: &Stmt, args: Args<'_>) -> Result<bool, LeaseError> {
        let timeout = self.ctx.op_timeout;
        Ok(self.exec(stmt, args, timeout).await? == 1)
    }

    async fn fetch_view(
        &mut self,
        stmt: &Stmt,
        ready: bool,
    ) -> Result<Option<LeaseView>, LeaseError> {
        let args = Args {
            ready,
            ..Args::default()
        };
        let rows: Vec<sql::ViewRow> = self.fetch(stmt, args).await?;
        Ok(rows.into_iter().next().and_then(sql::lease_view))
    }

    /// Writes the member heartbeat; where the product can, it also reads
    /// the lease in the same statement.
    pub(crate) async fn heartbeat(&mut self, ready: bool) -> Result<Option<LeaseView>, LeaseError> {
        let stmt = &self.dialect().heartbeat;
        if self.dialect.caps.heartbeat_reads_lease {
            return self.fetch_view(stmt, ready).await;
        }
        let args = Args {
            ready,
            ..Args::default()
        };
        self.exec(stmt, args, self.ctx.op_timeout).await?;
        Ok(None)
    }

    /// Reads the lease row (`None` if the row is missing).
    pub(crate) async fn read(&mut self) -> Result<Option<LeaseView>, LeaseError> {
        self.fetch_view(&self.dialect().read, false).await
    }

    /// Creates the lease row if missing and upserts the member row.
    pub(crate) async fn register(&mut self, ready: bool) -> Result<(), LeaseError> {
        let args = Args {
            ready,
            ..Args::default()
        };
        for stmt in self.dialect.register {
            self.exec(stmt, args, self.ctx.op_timeout).await?;
        }
        Ok(())
    }

    /// Takes the lease if it is free or expired (or still ours from an
    /// earlier term) and still has term `term`. The new term is `term + 1`.
    pub(crate) async fn acquire(&mut self, term: i64) -> Result<bool, LeaseError> {
        let args = Args {
            term,
            ..Args::default()
        };
        self.update(&self.dialect().acquire, args).await
    }

    /// Takes the lease from the holder with session `key` at `term`, whose
    /// session lock was seen released.
    /// With `confirmed` (Kubernetes reports the holder's processes gone), a
    /// product that checks the time since the holder's last renew does not.
    pub(crate) async fn steal(
        &mut self,
        term: i64,
        key: i64,
        confirmed: bool,
    ) -> Result<bool, LeaseError> {
        let Some(stmt) = &self.dialect().steal else {
            return Ok(false);
        };
        let args = Args {
            term,
            holder_key: key,
            steal_after_ms: confirmed.then_some(0),
            ..Args::default()
        };
        self.update(stmt, args).await
    }

    /// Extends our lease at `term` by one TTL from the database's now.
    pub(crate) async fn renew(&mut self, term: i64, timeout: Duration) -> Result<bool, LeaseError> {
        let args = Args {
            term,
            ..Args::default()
        };
        Ok(self.exec(&self.dialect().renew, args, timeout).await? == 1)
    }

    /// Ends our lease at `term` now (keeping the term, so the next holder
    /// gets `term + 1`) and wakes the standbys.
    pub(crate) async fn release(&mut self, term: i64) -> Result<bool, LeaseError> {
        let args = Args {
            term,
            ..Args::default()
        };
        let released = self.update(&self.dialect().release, args).await?;
        self.wake_waiters(released).await?;
        Ok(released)
    }

    /// Gives our lease at `term` to `target` (fresh, ready member) with term
    /// `term + 1`, and wakes the standbys.
    pub(crate) async fn hand_over(&mut self, term: i64, target: &str) -> Result<bool, LeaseError> {
        let args = Args {
            term,
            target,
            ..Args::default()
        };
        let handed = self.update(&self.dialect().hand_over, args).await?;
        self.wake_waiters(handed).await?;
        Ok(handed)
    }

    pub(crate) async fn set_ready(&mut self, ready: bool) -> Result<(), LeaseError> {
        let args = Args {
            ready,
            ..Args::default()
        };
        self.exec(&self.dialect().set_ready, args, self.ctx.op_timeout)
            .await
            .map(|_| ())
    }

    pub(crate) async fn members(&mut self) -> Result<Vec<MemberRow>, LeaseError> {
        let rows = self.fetch(&self.dialect().members, Args::default()).await?;
        Ok(sql::member_rows(&self.ctx, rows))
    }

    /// After a release or hand-over, where the product wakes the waiters by
    /// moving to a new session lock: takes a new lock, writes its key into
    /// the member row (a hand-over to this member reads it from there), and
    /// only then frees the old one.
    async fn wake_waiters(&mut self, changed: bool) -> Result<(), LeaseError> {
        if !changed || !self.dialect.caps.rekey_wakes_waiters {
            return Ok(());
        }
        let Conn::MySql(conn) = &mut self.conn else {
            return Ok(());
        };
        let key = new_session_key();
        let lock = mysql::lock_name(key);
        mysql::take_lock(&self.ctx, conn, &lock).await?;
        let old = std::mem::replace(&mut self.me.lock, lock);
        self.me.key = key;
        self.heartbeat(true).await?;
        let Conn::MySql(conn) = &mut self.conn else {
            return Ok(());
        };
        mysql::release_lock(&self.ctx, conn, &old).await
    }

    /// Interrupts the waiter connection's blocked lock wait.
    pub(crate) async fn cancel_wait(&mut self, backend_id: i64) -> Result<(), LeaseError> {
        match &mut self.conn {
            Conn::Postgres(session) => postgres::cancel(&self.ctx, session, backend_id).await,
            Conn::MySql(conn) => mysql::cancel(&self.ctx, conn, backend_id).await,
            Conn::Sqlite(_) => Ok(()),
        }
    }

    /// Waits for something the session reports by itself. Cancel-safe.
    /// Pending forever where the product has no such channel.
    pub(crate) async fn next_event(&mut self) -> SessionEvent {
        match &mut self.conn {
            Conn::Postgres(session) => session.next_event(&self.ctx).await,
            _ => std::future::pending().await,
        }
    }
}
