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

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlRow};
use sqlx::{ConnectOptions as _, Connection, Row};

use super::{
    CONNECT_TIMEOUT, Ctx, LOCK_WAIT, LeaseView, LockWait, MemberRow, member_row, new_session_key,
};
use crate::lease::error::LeaseError;

const VIEW: &str = "SELECT holder, holder_session, term, \
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

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../migrations/mysql");
    migrator.dangerous_set_table_name("joc_ha_migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// Applies the migrations under our own named lock: sqlx's MySQL migrator
/// asks for `GET_LOCK(name, -1)` and ignores the answer, and MariaDB does
/// not wait on a negative timeout, so members starting together would race.
async fn migrate(ctx: &Ctx, session: &mut sqlx::MySqlConnection) -> Result<(), LeaseError> {
    let lock = "joc-ha:migrate";
    let wait_s = i64::try_from((CONNECT_TIMEOUT * 3).as_secs()).unwrap_or(30);
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
    ctx.statements
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = tokio::time::timeout(
        CONNECT_TIMEOUT * 3,
        migrator().run_direct(None, &mut *session, false),
    )
    .await;
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
    match result {
        Ok(Ok(())) => unlocked.map(|_| ()),
        Ok(Err(error)) => Err(ctx.migration_error(&error)),
        Err(_) => Err(LeaseError::Timeout {
            op: "migrate",
            target: ctx.target(),
            timeout: CONNECT_TIMEOUT * 3,
        }),
    }
}

/// The server-wide name of session lock `key` (at most 64 characters).
fn lock_name(key: i64) -> String {
    format!("joc-ha:{key:016x}")
}

fn micros(ms: i64) -> i64 {
    ms.saturating_mul(1000)
}

pub(crate) struct MySqlStore {
    ctx: Arc<Ctx>,
    session: sqlx::MySqlConnection,
    pub(crate) key: i64,
    lock: String,
}

impl MySqlStore {
    pub(crate) async fn connect(
        ctx: Arc<Ctx>,
        options: MySqlConnectOptions,
    ) -> Result<(MySqlStore, Option<MySqlWaiter>), LeaseError> {
        let mut session = ctx
            .open(sqlx::MySqlConnection::connect_with(&options))
            .await?;
        if ctx.migrate {
            migrate(&ctx, &mut session).await?;
        }
        let tables: i64 = ctx
            .run(
                "check schema",
                ctx.op_timeout,
                sqlx::query_scalar(
                    "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() \
                     AND table_name IN ('joc_ha_lease', 'joc_ha_member')",
                )
                .fetch_one(&mut session),
            )
            .await?;
        if tables != 2 {
            return Err(ctx.schema_missing());
        }
        let key = new_session_key();
        let lock = lock_name(key);
        let locked: Option<i64> = ctx
            .run(
                "session lock",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(&lock)
                    .fetch_one(&mut session),
            )
            .await?;
        if locked != Some(1) {
            return Err(LeaseError::Database {
                op: "session lock",
                target: ctx.target(),
                detail: "a fresh random session lock was already taken".to_owned(),
            });
        }
        let waiter = match ctx.kind {
            crate::lease::MemberKind::Member => {
                Some(MySqlWaiter::connect(&ctx, options.clone()).await?)
            }
            crate::lease::MemberKind::ApiServer => None,
        };
        Ok((
            MySqlStore {
                ctx,
                session,
                key,
                lock,
            },
            waiter,
        ))
    }

    pub(crate) async fn heartbeat(&mut self, ready: bool) -> Result<Option<LeaseView>, LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "heartbeat",
            ctx.op_timeout,
            sqlx::query(HEARTBEAT)
                .bind(&ctx.cluster)
                .bind(&ctx.member)
                .bind(ctx.kind.as_str())
                .bind(ready)
                .bind(self.key)
                .execute(&mut self.session),
        )
        .await?;
        // No RETURNING for UPDATE here: the lease is read only when needed.
        Ok(None)
    }

    pub(crate) async fn read(&mut self) -> Result<Option<LeaseView>, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "read lease",
                ctx.op_timeout,
                sqlx::query(VIEW)
                    .bind(&ctx.cluster)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        row.map(|row| view(ctx, &row)).transpose()
    }

    pub(crate) async fn register(&mut self, ready: bool) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "register",
            ctx.op_timeout,
            sqlx::query(ENSURE_LEASE)
                .bind(&ctx.cluster)
                .execute(&mut self.session),
        )
        .await?;
        self.heartbeat(ready).await.map(|_| ())
    }

    pub(crate) async fn acquire(&mut self, term: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let done = ctx
            .run(
                "acquire",
                ctx.op_timeout,
                sqlx::query(ACQUIRE)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(micros(ctx.ttl_ms))
                    .bind(&ctx.cluster)
                    .bind(term)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(&self.lock)
                    .execute(&mut self.session),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn steal(&mut self, term: i64, holder_key: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let done = ctx
            .run(
                "take over",
                ctx.op_timeout,
                sqlx::query(STEAL)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(micros(ctx.ttl_ms))
                    .bind(&ctx.cluster)
                    .bind(term)
                    .bind(holder_key)
                    .bind(micros(ctx.steal_after_ms))
                    .bind(&self.lock)
                    .execute(&mut self.session),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn renew(&mut self, term: i64, timeout: Duration) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let done = ctx
            .run(
                "renew",
                timeout,
                sqlx::query(RENEW)
                    .bind(micros(ctx.ttl_ms))
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(&self.lock)
                    .execute(&mut self.session),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release(&mut self, term: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let done = ctx
            .run(
                "release",
                ctx.op_timeout,
                sqlx::query(RELEASE)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .execute(&mut self.session),
            )
            .await?;
        let released = done.rows_affected() == 1;
        if released {
            self.rekey().await?;
        }
        Ok(released)
    }

    pub(crate) async fn hand_over(&mut self, term: i64, target: &str) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let done = ctx
            .run(
                "hand over",
                ctx.op_timeout,
                sqlx::query(HAND_OVER)
                    .bind(target)
                    .bind(micros(ctx.ttl_ms))
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(micros(ctx.fresh_ms))
                    .bind(&self.lock)
                    .execute(&mut self.session),
            )
            .await?;
        let handed = done.rows_affected() == 1;
        if handed {
            self.rekey().await?;
        }
        Ok(handed)
    }

    /// Moves this session to a new lock and frees the old one: the waiters
    /// blocked on the old lock wake up and read the lease at once.
    async fn rekey(&mut self) -> Result<(), LeaseError> {
        let key = new_session_key();
        let lock = lock_name(key);
        let ctx = &self.ctx;
        let locked: Option<i64> = ctx
            .run(
                "session lock",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(&lock)
                    .fetch_one(&mut self.session),
            )
            .await?;
        if locked != Some(1) {
            return Err(LeaseError::Database {
                op: "session lock",
                target: ctx.target(),
                detail: "a fresh random session lock was already taken".to_owned(),
            });
        }
        let old = std::mem::replace(&mut self.lock, lock);
        self.key = key;
        // The member row must name the new key before the old lock wakes
        // anyone: a hand-over to this member reads it from there.
        self.heartbeat(true).await?;
        let ctx = &self.ctx;
        ctx.run(
            "session lock",
            ctx.op_timeout,
            sqlx::query("DO RELEASE_LOCK(?)")
                .bind(old)
                .execute(&mut self.session),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn set_ready(&mut self, ready: bool) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "set ready",
            ctx.op_timeout,
            sqlx::query(SET_READY)
                .bind(ready)
                .bind(&ctx.cluster)
                .bind(&ctx.member)
                .execute(&mut self.session),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn members(&mut self) -> Result<Vec<MemberRow>, LeaseError> {
        let ctx = &self.ctx;
        let rows = ctx
            .run(
                "list members",
                ctx.op_timeout,
                sqlx::query(MEMBERS)
                    .bind(&ctx.cluster)
                    .fetch_all(&mut self.session),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(member_row(
                    ctx,
                    row.try_get(0)?,
                    row.try_get::<&str, _>(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get::<i64, _>(4)? != 0,
                    row.try_get(5)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|error| ctx.classify("list members", &error))
    }

    pub(crate) async fn cancel_wait(&mut self, backend_id: i64) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        // KILL takes no placeholders; the id is a number we read ourselves.
        let sql = sqlx::AssertSqlSafe(format!("KILL QUERY {}", backend_id.max(0)));
        ctx.run(
            "cancel wait",
            ctx.op_timeout,
            sqlx::raw_sql(sql).execute(&mut self.session),
        )
        .await?;
        Ok(())
    }
}

fn view(ctx: &Ctx, row: &MySqlRow) -> Result<LeaseView, LeaseError> {
    let decode = || -> Result<LeaseView, sqlx::Error> {
        Ok(LeaseView {
            holder: row.try_get(0)?,
            holder_session: row.try_get(1)?,
            term: row.try_get(2)?,
            expires_in_ms: row.try_get(3)?,
            renewed_age_ms: row.try_get(4)?,
            db_now_ms: row.try_get(5)?,
        })
    };
    decode().map_err(|error| ctx.classify("read lease", &error))
}

/// The waiter connection: blocks in `GET_LOCK(holder lock, 10)`.
pub(crate) struct MySqlWaiter {
    conn: sqlx::MySqlConnection,
    pub(crate) backend_id: i64,
}

impl MySqlWaiter {
    pub(crate) async fn connect(
        ctx: &Ctx,
        options: MySqlConnectOptions,
    ) -> Result<MySqlWaiter, LeaseError> {
        // Waiting is this connection's job: no slow-statement warnings.
        let options = options.disable_statement_logging();
        let mut conn = ctx
            .open(sqlx::MySqlConnection::connect_with(&options))
            .await?;
        let id: u64 = ctx
            .run(
                "backend id",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut conn),
            )
            .await?;
        Ok(MySqlWaiter {
            conn,
            backend_id: i64::try_from(id).unwrap_or(i64::MAX),
        })
    }

    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        let got: Option<i64> = ctx
            .run(
                "watch holder",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(lock_name(key))
                    .fetch_one(&mut self.conn),
            )
            .await?;
        Ok(got == Some(1))
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        ctx.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait_s = i64::try_from(LOCK_WAIT.as_secs()).unwrap_or(10);
        let wait = sqlx::query_scalar::<_, Option<i64>>("SELECT GET_LOCK(?, ?)")
            .bind(lock_name(key))
            .bind(wait_s)
            .fetch_one(&mut self.conn);
        match tokio::time::timeout(LOCK_WAIT + Duration::from_secs(5), wait).await {
            Ok(Ok(Some(1))) => Ok(LockWait::Acquired),
            Ok(Ok(Some(_))) => Ok(LockWait::TimedOut),
            Ok(Ok(None)) => Ok(LockWait::Canceled),
            // ER_QUERY_INTERRUPTED: KILL QUERY from our own session.
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("1317") => {
                Ok(LockWait::Canceled)
            }
            Ok(Err(error)) => Err(ctx.classify("watch holder", &error)),
            Err(_) => Err(LeaseError::Timeout {
                op: "watch holder",
                target: ctx.target(),
                timeout: LOCK_WAIT + Duration::from_secs(5),
            }),
        }
    }

    pub(crate) async fn unlock(&mut self, ctx: &Ctx, key: i64) -> Result<(), LeaseError> {
        let released: Option<i64> = ctx
            .run(
                "watch holder",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                    .bind(lock_name(key))
                    .fetch_one(&mut self.conn),
            )
            .await?;
        if released == Some(1) {
            Ok(())
        } else {
            Err(LeaseError::Database {
                op: "watch holder",
                target: ctx.target(),
                detail: "the waiter did not hold the lock it had just taken".to_owned(),
            })
        }
    }
}
