//! MariaDB / MySQL: the lease row judged by the server's `UTC_TIMESTAMP(6)`,
//! and a named lock per session (`GET_LOCK('joc-ha:<key>', 0)`), which the
//! server frees when the session ends.
//!
//! Unlike PostgreSQL, an idle MySQL connection cannot notice that the server
//! ended its session (there is no asynchronous message to wait for), so a
//! holder whose session was killed server-side may not know for a while.
//! Hence a stricter rule here:
//!
//! * Every renew checks `IS_USED_LOCK(name) = CONNECTION_ID()`, so only a
//!   holder whose session lock is intact can renew ("verified renew").
//! * The holder's role ends `hold` (2 × renew interval) after it sent its last
//!   verified renew, besides the usual TTL rule.
//! * A standby may take over before expiry only once the holder's session
//!   lock is free (its waiter connection, blocked in `GET_LOCK(name, 10)`,
//!   returns) *and* the database's now is at least `renewed_at + hold +
//!   margin`; the statement itself checks the time.
//!
//! So a crashed holder is replaced after `hold + margin` (3 s by default)
//! after its last renew instead of the TTL, and a holder whose session was
//! cut has stopped acting `margin` before that. On release and hand-over the
//! holder moves to a new session lock, which wakes the standbys' waiters at
//! once.

use std::time::Duration;

use sqlx::Connection;
use sqlx::mysql::MySqlConnectOptions;

use super::sql::{self, Param::*, Stmt, Value};
use super::waiter::Waiting;
use super::{
    CONNECT_TIMEOUT, Capabilities, Conn, Ctx, Dialect, LOCK_WAIT, LockWait, Me, new_session_key,
};
use crate::lease::config::MemberKind;
use crate::lease::error::LeaseError;

const READ: &str = "SELECT holder, holder_session, term, \
     CAST(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) DIV 1000 AS SIGNED), \
     CAST(TIMESTAMPDIFF(MICROSECOND, renewed_at, UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED), \
     CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED) \
     FROM joc_ha_lease WHERE cluster_id = ?";

const HEARTBEAT: &str = "INSERT INTO joc_ha_member \
     (cluster_id, member, kind, ready, session_key, heartbeat_at) \
     VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE kind = VALUES(kind), \
     ready = VALUES(ready), session_key = VALUES(session_key), heartbeat_at = UTC_TIMESTAMP(6)";

const ENSURE_LEASE: &str = "INSERT INTO joc_ha_lease (cluster_id, term, expires_at) \
     VALUES (?, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE cluster_id = cluster_id";

const ACQUIRE: &str = "UPDATE joc_ha_lease SET holder = ?, holder_session = ?, term = term + 1, \
     acquired_at = UTC_TIMESTAMP(6), renewed_at = UTC_TIMESTAMP(6), \
     expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
     WHERE cluster_id = ? AND term = ? \
     AND (expires_at <= UTC_TIMESTAMP(6) OR holder IS NULL OR (holder = ? AND holder_session = ?)) \
     AND IS_USED_LOCK(?) = CONNECTION_ID()";

const STEAL: &str = "UPDATE joc_ha_lease SET holder = ?, holder_session = ?, term = term + 1, \
     acquired_at = UTC_TIMESTAMP(6), renewed_at = UTC_TIMESTAMP(6), \
     expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
     WHERE cluster_id = ? AND term = ? AND holder_session = ? \
     AND renewed_at <= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
     AND IS_USED_LOCK(?) = CONNECTION_ID()";

const RENEW: &str = "UPDATE joc_ha_lease SET renewed_at = UTC_TIMESTAMP(6), \
     expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
     WHERE cluster_id = ? AND holder = ? AND holder_session = ? AND term = ? \
     AND expires_at > UTC_TIMESTAMP(6) AND IS_USED_LOCK(?) = CONNECTION_ID()";

const RELEASE: &str = "UPDATE joc_ha_lease SET holder = NULL, holder_session = NULL, \
     renewed_at = UTC_TIMESTAMP(6), expires_at = UTC_TIMESTAMP(6) \
     WHERE cluster_id = ? AND holder = ? AND holder_session = ? AND term = ?";

const HAND_OVER: &str = "UPDATE joc_ha_lease l JOIN joc_ha_member t \
     ON t.cluster_id = l.cluster_id AND t.member = ? \
     SET l.holder = t.member, l.holder_session = t.session_key, l.term = l.term + 1, \
     l.acquired_at = UTC_TIMESTAMP(6), l.renewed_at = UTC_TIMESTAMP(6), \
     l.expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
     WHERE l.cluster_id = ? AND l.holder = ? AND l.holder_session = ? AND l.term = ? \
     AND l.expires_at > UTC_TIMESTAMP(6) AND t.member <> l.holder AND t.kind = 'member' \
     AND t.ready AND t.session_key IS NOT NULL \
     AND t.heartbeat_at > UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
     AND IS_USED_LOCK(?) = CONNECTION_ID()";

const SET_READY: &str = "UPDATE joc_ha_member SET ready = ?, heartbeat_at = UTC_TIMESTAMP(6) \
     WHERE cluster_id = ? AND member = ?";

const MEMBERS: &str = "SELECT m.member, m.kind, m.ready, \
     CAST(TIMESTAMPDIFF(MICROSECOND, m.heartbeat_at, UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED), \
     CAST(COALESCE(l.holder = m.member AND l.expires_at > UTC_TIMESTAMP(6), 0) AS SIGNED), \
     CAST(TIMESTAMPDIFF(MICROSECOND, l.renewed_at, UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED) \
     FROM joc_ha_member m LEFT JOIN joc_ha_lease l ON l.cluster_id = m.cluster_id \
     WHERE m.cluster_id = ? ORDER BY m.member";

const COUNT_TABLES: &str = "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.tables \
     WHERE table_schema = DATABASE() AND table_name IN ('joc_ha_lease', 'joc_ha_member')";

const HEARTBEAT_STMT: Stmt =
    Stmt::new("heartbeat", HEARTBEAT, &[Cluster, Member, Kind, Ready, Key]);

const CLAIM: &str = "INSERT IGNORE INTO joc_ha_owner (scope, cluster_id, claimed_at) \
     VALUES ('js7', ?, UTC_TIMESTAMP(6))";

const OWNER: &str = "SELECT cluster_id FROM joc_ha_owner WHERE scope = 'js7'";

pub(crate) static DIALECT: Dialect = Dialect {
    caps: Capabilities {
        session_locks: true,
        holder_blind_to_session_end: true,
        // No RETURNING for UPDATE here: the lease is read only when needed.
        heartbeat_reads_lease: false,
        rekey_wakes_waiters: true,
    },
    heartbeat: HEARTBEAT_STMT,
    read: Stmt::new("read lease", READ, &[Cluster]),
    register: &[
        Stmt::new("register", ENSURE_LEASE, &[Cluster]),
        HEARTBEAT_STMT,
    ],
    acquire: Stmt::new(
        "acquire",
        ACQUIRE,
        &[Member, Key, TtlUs, Cluster, Term, Member, Key, Lock],
    ),
    steal: Some(Stmt::new(
        "take over",
        STEAL,
        &[
            Member,
            Key,
            TtlUs,
            Cluster,
            Term,
            HolderKey,
            StealAfterUs,
            Lock,
        ],
    )),
    renew: Stmt::new("renew", RENEW, &[TtlUs, Cluster, Member, Key, Term, Lock]),
    release: Stmt::new("release", RELEASE, &[Cluster, Member, Key, Term]),
    hand_over: Stmt::new(
        "hand over",
        HAND_OVER,
        &[Target, TtlUs, Cluster, Member, Key, Term, FreshUs, Lock],
    ),
    set_ready: Stmt::new("set ready", SET_READY, &[Ready, Cluster, Member]),
    members: Stmt::new("list members", MEMBERS, &[Cluster]),
    claim: Stmt::new("claim the database", CLAIM, &[Cluster]),
    owner: Stmt::new("read the database's owner", OWNER, &[]),
};

/// Applies the migrations under our own named lock: sqlx's MySQL migrator
/// asks for `GET_LOCK(name, -1)` and ignores the answer, and MariaDB does
/// not wait on a negative timeout, so members starting together would race.
async fn migrate(ctx: &Ctx, session: &mut sqlx::MySqlConnection) -> Result<(), LeaseError> {
    let lock = "joc-ha:migrate";
    let wait_s = i64::try_from(sql::MIGRATE_TIMEOUT.as_secs()).unwrap_or(30);
    let locked: Option<i64> = ctx
        .run(
            "migrate",
            CONNECT_TIMEOUT * 4,
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT(?, ':', MD5(DATABASE())), ?)")
                .bind(lock)
                .bind(wait_s)
                .fetch_one(&mut *session),
        )
        .await?;
    if locked != Some(1) {
        return Err(LeaseError::Migration {
            target: ctx.target(),
            detail: "another member kept the migration lock for too long".to_owned(),
        });
    }
    let migrator = sql::named(sqlx::migrate!("../migrations/mysql"));
    let result = sql::migrate(ctx, &migrator, &mut *session, 1).await;
    // Released even after a failure (closing the session would do it too).
    let unlocked = ctx
        .run(
            "migrate",
            ctx.op_timeout,
            sqlx::query("DO RELEASE_LOCK(CONCAT(?, ':', MD5(DATABASE())))")
                .bind(lock)
                .execute(&mut *session),
        )
        .await;
    result.and(unlocked.map(|_| ()))
}

/// The server-wide name of session lock `key` (at most 64 characters).
pub(crate) fn lock_name(key: i64) -> String {
    format!("joc-ha:{key:016x}")
}

/// Takes the named session lock `lock` on this session, without waiting.
pub(crate) async fn take_lock(
    ctx: &Ctx,
    session: &mut sqlx::MySqlConnection,
    lock: &str,
) -> Result<(), LeaseError> {
    let locked: Option<i64> = ctx
        .run(
            "session lock",
            ctx.op_timeout,
            sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                .bind(lock)
                .fetch_one(session),
        )
        .await?;
    if locked == Some(1) {
        Ok(())
    } else {
        Err(LeaseError::Database {
            op: "session lock",
            target: ctx.target(),
            detail: "a fresh random session lock was already taken".to_owned(),
        })
    }
}

/// Frees the named session lock `lock`, waking whoever waits on it.
pub(crate) async fn release_lock(
    ctx: &Ctx,
    session: &mut sqlx::MySqlConnection,
    lock: &str,
) -> Result<(), LeaseError> {
    ctx.run(
        "session lock",
        ctx.op_timeout,
        sqlx::query("DO RELEASE_LOCK(?)")
            .bind(lock)
            .execute(session),
    )
    .await
    .map(|_| ())
}

/// Opens the session (and, for members, the waiter connection).
pub(crate) async fn connect(
    ctx: &Ctx,
    options: MySqlConnectOptions,
) -> Result<(Conn, Me, Option<MySqlWaiter>), LeaseError> {
    let mut session = ctx
        .open(sqlx::MySqlConnection::connect_with(&options))
        .await?;
    if ctx.migrate {
        migrate(ctx, &mut session).await?;
    }
    sql::check_schema(ctx, COUNT_TABLES, &mut session).await?;
    sql::claim_database(ctx, &DIALECT.claim, &DIALECT.owner, &mut session).await?;
    let key = new_session_key();
    let lock = lock_name(key);
    take_lock(ctx, &mut session, &lock).await?;
    let waiter = match ctx.kind {
        MemberKind::Member => Some(MySqlWaiter::open(ctx, options, BACKEND_ID).await?),
        MemberKind::ApiServer => None,
    };
    let me = Me {
        key,
        lock,
        boot: String::new(),
    };
    Ok((Conn::MySql(session), me, waiter))
}

/// Interrupts the waiter connection `backend_id`'s lock wait.
pub(crate) async fn cancel(
    ctx: &Ctx,
    session: &mut sqlx::MySqlConnection,
    backend_id: i64,
) -> Result<(), LeaseError> {
    // KILL takes no placeholders; the id is a number we read ourselves.
    let sql = sqlx::AssertSqlSafe(format!("KILL QUERY {}", backend_id.max(0)));
    ctx.run(
        "cancel wait",
        ctx.op_timeout,
        sqlx::raw_sql(sql).execute(session),
    )
    .await?;
    Ok(())
}

/// The waiter connection: blocks in `GET_LOCK(holder lock, 10)`.
pub(crate) type MySqlWaiter = Waiting<sqlx::MySqlConnection>;

/// The waiter connection's server id.
pub(crate) const BACKEND_ID: &str = "SELECT CAST(CONNECTION_ID() AS SIGNED)";

impl MySqlWaiter {
    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        let sql = "SELECT CAST(COALESCE(GET_LOCK(?, 0), 0) AS SIGNED)";
        self.ask(ctx, sql, Value::Text(&lock_name(key))).await
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        let wait_s = i64::try_from(LOCK_WAIT.as_secs()).unwrap_or(10);
        let wait = sqlx::query_scalar::<_, Option<i64>>("SELECT GET_LOCK(?, ?)")
            .bind(lock_name(key))
            .bind(wait_s)
            .fetch_one(&mut self.conn);
        match ctx
            .bounded("watch holder", LOCK_WAIT + Duration::from_secs(5), wait)
            .await?
        {
            Ok(Some(1)) => Ok(LockWait::Acquired),
            Ok(Some(_)) => Ok(LockWait::TimedOut),
            Ok(None) => Ok(LockWait::Canceled),
            // ER_QUERY_INTERRUPTED: KILL QUERY from our own session.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("1317") => {
                Ok(LockWait::Canceled)
            }
            Err(error) => Err(ctx.classify("watch holder", &error)),
        }
    }

    /// True if the lock was held and is now free.
    pub(crate) async fn unlock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        let sql = "SELECT CAST(COALESCE(RELEASE_LOCK(?), 0) AS SIGNED)";
        self.ask(ctx, sql, Value::Text(&lock_name(key))).await
    }
}
