//! PostgreSQL: the lease row judged by the server's `now()`, a session-level
//! advisory lock per session (key = random 62-bit number) held on a
//! `LISTEN`ing connection that always waits for input, and NOTIFY on release
//! and hand-over.
//!
//! * Holder crash: the kernel closes its sockets, the server ends the session
//!   and frees the advisory lock; each standby's waiter connection, blocked in
//!   `pg_advisory_lock(holder key)`, returns at once.
//! * Holder whose session ends for another reason (server-side kill): its
//!   session connection is always in a read wait between statements, so it
//!   sees the close within milliseconds and demotes; standbys wait a guard
//!   (250 ms) before taking over, and every renew checks in SQL that this
//!   very connection still holds the session lock.
//! * Frozen (SIGSTOP) or cut-off holder: its session stays open, so only the
//!   TTL applies.
//! * Only a release *seen while waiting* counts: after a server restart every
//!   session ends, the standbys' waiters too, and a lock found free on a
//!   fresh waiter connection says nothing about when the holder's session
//!   ended, so only the TTL applies then.
//!
//! Assumption: the server ends a live holder's session without the holder
//! noticing only after a network partition, once the server's TCP keepalive
//! gives up (about 2 hours by default; keep the server's `tcp_keepalives_*`
//! well above the TTL). A holder cut off that long has demoted at its
//! deadline long before.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::sql::{self, Param::*, Stmt, Value};
use super::waiter::Waiting;
use super::{
    CHANNEL, CONNECT_TIMEOUT, Capabilities, Conn, Ctx, Dialect, LOCK_WAIT, LockWait, Me,
    SessionEvent, new_session_key,
};
use crate::lease::config::MemberKind;
use crate::lease::error::LeaseError;

/// True when this connection holds session lock `$3` (a renew or take-over on
/// a silently replaced connection must fail).
macro_rules! own_lock {
    () => {
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
         AND granted AND objsubid = 1 AND classid::int8 = ($3::int8 >> 32) \
         AND objid::int8 = ($3::int8 & 4294967295))"
    };
}

macro_rules! view_columns {
    () => {
        "holder, holder_session, term, \
         (extract(epoch FROM expires_at - now()) * 1000)::int8, \
         (extract(epoch FROM now() - renewed_at) * 1000)::int8, \
         (extract(epoch FROM now()) * 1000)::int8"
    };
}

const HEARTBEAT: &str = concat!(
    "WITH hb AS (INSERT INTO joc_ha_member (cluster_id, member, kind, ready, session_key, heartbeat_at) \
     VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (cluster_id, member) DO UPDATE \
     SET kind = EXCLUDED.kind, ready = EXCLUDED.ready, session_key = EXCLUDED.session_key, \
     heartbeat_at = now()) \
     SELECT ",
    view_columns!(),
    " FROM joc_ha_lease WHERE cluster_id = $1"
);

const READ: &str = concat!(
    "SELECT ",
    view_columns!(),
    " FROM joc_ha_lease WHERE cluster_id = $1"
);

const REGISTER: &str = "WITH l AS (INSERT INTO joc_ha_lease (cluster_id, term, expires_at) \
     VALUES ($1, 0, now()) ON CONFLICT (cluster_id) DO NOTHING), \
     hb AS (INSERT INTO joc_ha_member (cluster_id, member, kind, ready, session_key, heartbeat_at) \
     VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (cluster_id, member) DO UPDATE \
     SET kind = EXCLUDED.kind, ready = EXCLUDED.ready, session_key = EXCLUDED.session_key, \
     heartbeat_at = now()) \
     SELECT 1";

const ACQUIRE: &str = concat!(
    "UPDATE joc_ha_lease SET holder = $2, holder_session = $3, term = term + 1, \
     acquired_at = now(), renewed_at = now(), expires_at = now() + $5 * interval '1 millisecond' \
     WHERE cluster_id = $1 AND term = $4 \
     AND (expires_at <= now() OR holder IS NULL OR (holder = $2 AND holder_session = $3)) AND ",
    own_lock!(),
    " RETURNING term"
);

const STEAL: &str = concat!(
    "UPDATE joc_ha_lease SET holder = $2, holder_session = $3, term = term + 1, \
     acquired_at = now(), renewed_at = now(), expires_at = now() + $5 * interval '1 millisecond' \
     WHERE cluster_id = $1 AND term = $4 AND holder_session = $6 AND ",
    own_lock!(),
    " RETURNING term"
);

const RENEW: &str = concat!(
    "UPDATE joc_ha_lease SET renewed_at = now(), expires_at = now() + $5 * interval '1 millisecond' \
     WHERE cluster_id = $1 AND holder = $2 AND holder_session = $3 AND term = $4 \
     AND expires_at > now() AND ",
    own_lock!(),
    " RETURNING term"
);

const RELEASE: &str = "WITH r AS (UPDATE joc_ha_lease SET holder = NULL, holder_session = NULL, \
     renewed_at = now(), expires_at = now() \
     WHERE cluster_id = $1 AND holder = $2 AND holder_session = $3 AND term = $4 RETURNING term) \
     SELECT r.term, pg_notify('joc_ha_lease', $1)::text FROM r";

const HAND_OVER: &str = concat!(
    "WITH t AS (SELECT member, session_key FROM joc_ha_member \
     WHERE cluster_id = $1 AND member = $6 AND member <> $2 AND kind = 'member' AND ready \
     AND session_key IS NOT NULL AND heartbeat_at > now() - $7 * interval '1 millisecond'), \
     u AS (UPDATE joc_ha_lease l SET holder = t.member, holder_session = t.session_key, \
     term = l.term + 1, acquired_at = now(), renewed_at = now(), \
     expires_at = now() + $5 * interval '1 millisecond' FROM t \
     WHERE l.cluster_id = $1 AND l.holder = $2 AND l.holder_session = $3 AND l.term = $4 \
     AND l.expires_at > now() AND ",
    own_lock!(),
    " RETURNING l.term) SELECT u.term, pg_notify('joc_ha_lease', $1)::text FROM u"
);

const SET_READY: &str = "UPDATE joc_ha_member SET ready = $3, heartbeat_at = now() \
     WHERE cluster_id = $1 AND member = $2";

const MEMBERS: &str = "SELECT m.member, m.kind, m.ready, \
     (extract(epoch FROM now() - m.heartbeat_at) * 1000)::int8, \
     CAST(COALESCE(l.holder = m.member AND l.expires_at > now(), false) AS int)::int8, \
     (extract(epoch FROM now() - l.renewed_at) * 1000)::int8 \
     FROM joc_ha_member m LEFT JOIN joc_ha_lease l ON l.cluster_id = m.cluster_id \
     WHERE m.cluster_id = $1 ORDER BY m.member";

const COUNT_TABLES: &str = "SELECT ((to_regclass('joc_ha_lease') IS NOT NULL)::int \
     + (to_regclass('joc_ha_member') IS NOT NULL)::int)::int8";

const CLAIM: &str = "INSERT INTO joc_ha_owner (scope, cluster_id, claimed_at) \
     VALUES ('js7', $1, now()) ON CONFLICT (scope) DO NOTHING";

const OWNER: &str = "SELECT cluster_id FROM joc_ha_owner WHERE scope = 'js7'";

const MEMBER_ROW: &[sql::Param] = &[Cluster, Member, Kind, Ready, Key];
const MINE: &[sql::Param] = &[Cluster, Member, Key, Term, TtlMs];

pub(crate) static DIALECT: Dialect = Dialect {
    caps: Capabilities {
        session_locks: true,
        holder_blind_to_session_end: false,
        heartbeat_reads_lease: true,
        rekey_wakes_waiters: false,
    },
    heartbeat: Stmt::new("heartbeat", HEARTBEAT, MEMBER_ROW),
    read: Stmt::new("read lease", READ, &[Cluster]),
    register: &[Stmt::new("register", REGISTER, MEMBER_ROW)],
    acquire: Stmt::new("acquire", ACQUIRE, MINE),
    steal: Some(Stmt::new(
        "take over",
        STEAL,
        &[Cluster, Member, Key, Term, TtlMs, HolderKey],
    )),
    renew: Stmt::new("renew", RENEW, MINE),
    release: Stmt::new("release", RELEASE, &[Cluster, Member, Key, Term]),
    hand_over: Stmt::new(
        "hand over",
        HAND_OVER,
        &[Cluster, Member, Key, Term, TtlMs, Target, FreshMs],
    ),
    set_ready: Stmt::new("set ready", SET_READY, &[Cluster, Member, Ready]),
    members: Stmt::new("list members", MEMBERS, &[Cluster]),
    claim: Stmt::new("claim the database", CLAIM, &[Cluster]),
    owner: Stmt::new("read the database's owner", OWNER, &[]),
};

/// The session connection: `LISTEN`s, so it always waits for input and
/// sees at once when the server closes it.
pub(crate) struct Session {
    pub(crate) listener: PgListener,
    _pool: PgPool,
}

/// Opens the session (and, for members, the waiter connection).
pub(crate) async fn connect(
    ctx: &Ctx,
    options: PgConnectOptions,
) -> Result<(Conn, Me, Option<PgWaiter>), LeaseError> {
    // The waiter connection comes first: a plain connect reports refused
    // logins and unreachable servers precisely (a pool would retry them
    // until its timeout and then only say "timed out").
    let mut waiter = PgWaiter::open(ctx, waiter_options(&options), BACKEND_ID).await?;
    if ctx.migrate {
        let migrator = sql::named(sqlx::migrate!("../migrations/postgres"));
        sql::migrate(ctx, &migrator, &mut waiter.conn, 1).await?;
    }
    sql::check_schema(ctx, COUNT_TABLES, &mut waiter.conn).await?;
    sql::claim_database(ctx, &DIALECT.claim, &DIALECT.owner, &mut waiter.conn).await?;

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(CONNECT_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(options);
    let mut listener = ctx.open(PgListener::connect_with(&pool)).await?;
    // A lost connection must surface as Ok(None) from try_recv, never be
    // replaced silently: the session lock lives and dies with it.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    ctx.run("listen", ctx.op_timeout, listener.listen(CHANNEL))
        .await?;
    let key = new_session_key();
    let locked: bool = ctx
        .run(
            "session lock",
            ctx.op_timeout,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut listener),
        )
        .await?;
    if !locked {
        return Err(LeaseError::Database {
            op: "session lock",
            target: ctx.target(),
            detail: "a fresh random session key was already locked".to_owned(),
        });
    }
    let waiter = match ctx.kind {
        MemberKind::Member => Some(waiter),
        MemberKind::ApiServer => {
            let _ = waiter.conn.close().await;
            None
        }
    };
    let session = Session {
        listener,
        _pool: pool,
    };
    let me = Me {
        key,
        lock: String::new(),
        boot: String::new(),
    };
    Ok((Conn::Postgres(session), me, waiter))
}

/// Interrupts the waiter connection `backend_id`'s lock wait.
pub(crate) async fn cancel(
    ctx: &Ctx,
    session: &mut Session,
    backend_id: i64,
) -> Result<(), LeaseError> {
    let pid = i32::try_from(backend_id).unwrap_or(0);
    ctx.run(
        "cancel wait",
        ctx.op_timeout,
        sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .execute(&mut session.listener),
    )
    .await?;
    Ok(())
}

impl Session {
    /// A NOTIFY for this cluster, or the end of the session. Cancel-safe.
    pub(crate) async fn next_event(&mut self, ctx: &Ctx) -> SessionEvent {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) => {
                    if notification.payload() == ctx.cluster {
                        return SessionEvent::Notified;
                    }
                }
                Ok(None) => {
                    return SessionEvent::Lost(LeaseError::ConnectionLost {
                        op: "listen",
                        target: ctx.target(),
                        detail: "the server closed the session connection".to_owned(),
                    });
                }
                Err(error) => return SessionEvent::Lost(ctx.classify("listen", &error)),
            }
        }
    }
}

/// The waiter connection: blocks in `pg_advisory_lock(holder key)` with a
/// `lock_timeout` of [`LOCK_WAIT`].
pub(crate) type PgWaiter = Waiting<sqlx::PgConnection>;

/// The waiter connection's server id.
pub(crate) const BACKEND_ID: &str = "SELECT pg_backend_pid()::int8";

/// The waiter connection's options: its lock waits end after [`LOCK_WAIT`].
pub(crate) fn waiter_options(options: &PgConnectOptions) -> PgConnectOptions {
    let lock_timeout = format!("{}ms", LOCK_WAIT.as_millis());
    options
        .clone()
        .options([("lock_timeout", lock_timeout.as_str())])
}

impl PgWaiter {
    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        let sql = "SELECT pg_try_advisory_lock($1)::int::int8";
        self.ask(ctx, sql, Value::Int(key)).await
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        let wait = sqlx::query("SELECT pg_advisory_lock($1)::text")
            .bind(key)
            .execute(&mut self.conn);
        match ctx
            .bounded("watch holder", LOCK_WAIT + Duration::from_secs(5), wait)
            .await?
        {
            Ok(_) => Ok(LockWait::Acquired),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => {
                Ok(LockWait::TimedOut)
            }
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014") => {
                Ok(LockWait::Canceled)
            }
            Err(error) => Err(ctx.classify("watch holder", &error)),
        }
    }

    /// True if the lock was held and is now free.
    pub(crate) async fn unlock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        let sql = "SELECT pg_advisory_unlock($1)::int::int8";
        self.ask(ctx, sql, Value::Int(key)).await
    }
}
