//! SQLite: one database file shared by the processes of one host (local
//! demos; not for files on network filesystems). There is no server, hence
//! no server clock and no sessions:
//!
//! * "Database time" is the host's `CLOCK_MONOTONIC` (milliseconds), which
//!   every process on the host shares and which no wall-clock change (NTP
//!   step, `date -s`, libfaketime) moves. It is read right before each
//!   statement and passed in; a stale reading only makes a check more
//!   conservative (a lease looks less expired, a renewal expires earlier).
//!   Every time is stored with the host's boot id: times from another boot
//!   count as expired.
//! * Only the TTL rule applies: no early take-over after a crash.
//! * Standbys learn of a release or hand-over at their next heartbeat (every
//!   renew interval): polling, which is cheap on a local file.
//! * WAL mode and a busy timeout let the processes write concurrently.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row};

use super::{Ctx, LeaseView, MemberRow, member_row, new_session_key};
use crate::lease::error::LeaseError;

const VIEW: &str = "SELECT holder, holder_session, term, \
     CASE WHEN clock IS ?2 THEN expires_at - ?3 ELSE -1 END, \
     CASE WHEN clock IS ?2 THEN ?3 - renewed_at END, ?3 \
     FROM joc_ha_lease WHERE cluster_id = ?1";

const HEARTBEAT: &str = "INSERT INTO joc_ha_member \
     (cluster_id, member, kind, ready, session_key, clock, heartbeat_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (cluster_id, member) DO UPDATE \
     SET kind = excluded.kind, ready = excluded.ready, session_key = excluded.session_key, \
     clock = excluded.clock, heartbeat_at = excluded.heartbeat_at \
     RETURNING (SELECT holder FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT holder_session FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT term FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT CASE WHEN clock IS ?6 THEN expires_at - ?7 ELSE -1 END \
      FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT CASE WHEN clock IS ?6 THEN ?7 - renewed_at END \
      FROM joc_ha_lease WHERE cluster_id = ?1), \
     ?7";

const ENSURE_LEASE: &str = "INSERT INTO joc_ha_lease (cluster_id, term, expires_at) \
     VALUES (?1, 0, 0) ON CONFLICT (cluster_id) DO NOTHING";

const ACQUIRE: &str = "UPDATE joc_ha_lease SET holder = ?2, holder_session = ?3, \
     term = term + 1, clock = ?6, acquired_at = ?7, renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND term = ?4 AND (clock IS NOT ?6 OR expires_at <= ?7 \
     OR holder IS NULL OR (holder = ?2 AND holder_session = ?3)) RETURNING term";

const RENEW: &str = "UPDATE joc_ha_lease SET renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     AND clock IS ?6 AND expires_at > ?7 RETURNING term";

const RELEASE: &str = "UPDATE joc_ha_lease SET holder = NULL, holder_session = NULL, \
     renewed_at = ?7, expires_at = ?7 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     RETURNING term";

const HAND_OVER: &str = "UPDATE joc_ha_lease SET holder = ?8, \
     holder_session = (SELECT session_key FROM joc_ha_member WHERE cluster_id = ?1 AND member = ?8), \
     term = term + 1, acquired_at = ?7, renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     AND clock IS ?6 AND expires_at > ?7 \
     AND EXISTS (SELECT 1 FROM joc_ha_member WHERE cluster_id = ?1 AND member = ?8 \
     AND member <> ?2 AND kind = 'member' AND ready AND session_key IS NOT NULL \
     AND clock IS ?6 AND heartbeat_at > ?7 - ?9) RETURNING term";

const SET_READY: &str = "UPDATE joc_ha_member SET ready = ?3, clock = ?4, heartbeat_at = ?5 \
     WHERE cluster_id = ?1 AND member = ?2";

const MEMBERS: &str = "SELECT m.member, m.kind, m.ready, \
     CASE WHEN m.clock IS ?2 THEN ?3 - m.heartbeat_at END, \
     COALESCE(l.holder = m.member AND l.clock IS ?2 AND l.expires_at > ?3, 0), \
     CASE WHEN l.clock IS ?2 THEN ?3 - l.renewed_at END \
     FROM joc_ha_member m LEFT JOIN joc_ha_lease l ON l.cluster_id = m.cluster_id \
     WHERE m.cluster_id = ?1 ORDER BY m.member";

/// Several processes may start at once; SQLite's migrator takes no lock, so a
/// loser of the race sees a busy database or a duplicate version and retries.
const MIGRATE_ATTEMPTS: u32 = 6;

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../migrations/sqlite");
    migrator.dangerous_set_table_name("joc_ha_migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// Milliseconds of the host's monotonic clock: SQLite's "database time".
fn now_ms() -> Result<i64, LeaseError> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_err(|error| {
        LeaseError::Database {
            op: "read clock",
            target: "CLOCK_MONOTONIC".to_owned(),
            detail: error.to_string(),
        }
    })?;
    Ok(now.tv_sec() * 1000 + now.tv_nsec() / 1_000_000)
}

/// Identifies the current boot: monotonic times of another boot mean nothing.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| "unknown-boot".to_owned())
}

pub(crate) struct SqliteStore {
    ctx: Arc<Ctx>,
    conn: sqlx::SqliteConnection,
    pub(crate) key: i64,
    boot: String,
}

impl SqliteStore {
    pub(crate) async fn connect(
        ctx: Arc<Ctx>,
        options: SqliteConnectOptions,
    ) -> Result<SqliteStore, LeaseError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(1));
        let mut conn = ctx
            .open(sqlx::SqliteConnection::connect_with(&options))
            .await?;
        if ctx.migrate {
            let mut attempt = 1;
            loop {
                ctx.statements
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match migrator().run_direct(None, &mut conn, false).await {
                    Ok(()) => break,
                    Err(error) if attempt < MIGRATE_ATTEMPTS => {
                        tracing::debug!(%attempt, error = %ctx.url.scrub(&error.to_string()),
                            "SQLite migration raced with another process; retrying");
                        let pause = 50 + rand::random::<u64>() % 200;
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        attempt += 1;
                    }
                    Err(error) => return Err(ctx.migration_error(&error)),
                }
            }
        }
        let tables: i64 = ctx
            .run(
                "check schema",
                ctx.op_timeout,
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                     AND name IN ('joc_ha_lease', 'joc_ha_member')",
                )
                .fetch_one(&mut conn),
            )
            .await?;
        if tables != 2 {
            return Err(ctx.schema_missing());
        }
        Ok(SqliteStore {
            ctx,
            conn,
            key: new_session_key(),
            boot: boot_id(),
        })
    }

    pub(crate) async fn heartbeat(&mut self, ready: bool) -> Result<Option<LeaseView>, LeaseError> {
        let now = now_ms()?;
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "heartbeat",
                ctx.op_timeout,
                sqlx::query(HEARTBEAT)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(ctx.kind.as_str())
                    .bind(ready)
                    .bind(self.key)
                    .bind(&self.boot)
                    .bind(now)
                    .fetch_optional(&mut self.conn),
            )
            .await?;
        match row {
            Some(row) if row.try_get::<Option<i64>, _>(2).ok().flatten().is_some() => {
                view(ctx, "heartbeat", &row).map(Some)
            }
            _ => Ok(None),
        }
    }

    pub(crate) async fn read(&mut self) -> Result<Option<LeaseView>, LeaseError> {
        let now = now_ms()?;
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "read lease",
                ctx.op_timeout,
                sqlx::query(VIEW)
                    .bind(&ctx.cluster)
                    .bind(&self.boot)
                    .bind(now)
                    .fetch_optional(&mut self.conn),
            )
            .await?;
        row.map(|row| view(ctx, "read lease", &row)).transpose()
    }

    pub(crate) async fn register(&mut self, ready: bool) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "register",
            ctx.op_timeout,
            sqlx::query(ENSURE_LEASE)
                .bind(&ctx.cluster)
                .execute(&mut self.conn),
        )
        .await?;
        self.heartbeat(ready).await.map(|_| ())
    }

    async fn update(
        &mut self,
        op: &'static str,
        sql: &'static str,
        term: i64,
        timeout: Duration,
        extra: Option<(&str, i64)>,
    ) -> Result<bool, LeaseError> {
        let now = now_ms()?;
        let ctx = &self.ctx;
        let mut query = sqlx::query(sql)
            .bind(&ctx.cluster)
            .bind(&ctx.member)
            .bind(self.key)
            .bind(term)
            .bind(ctx.ttl_ms)
            .bind(&self.boot)
            .bind(now);
        if let Some((target, fresh_ms)) = extra {
            query = query.bind(target.to_owned()).bind(fresh_ms);
        }
        let row = ctx
            .run(op, timeout, query.fetch_optional(&mut self.conn))
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn acquire(&mut self, term: i64) -> Result<bool, LeaseError> {
        let timeout = self.ctx.op_timeout;
        self.update("acquire", ACQUIRE, term, timeout, None).await
    }

    pub(crate) async fn renew(&mut self, term: i64, timeout: Duration) -> Result<bool, LeaseError> {
        self.update("renew", RENEW, term, timeout, None).await
    }

    pub(crate) async fn release(&mut self, term: i64) -> Result<bool, LeaseError> {
        let timeout = self.ctx.op_timeout;
        self.update("release", RELEASE, term, timeout, None).await
    }

    pub(crate) async fn hand_over(&mut self, term: i64, target: &str) -> Result<bool, LeaseError> {
        let timeout = self.ctx.op_timeout;
        let fresh_ms = self.ctx.fresh_ms;
        self.update(
            "hand over",
            HAND_OVER,
            term,
            timeout,
            Some((target, fresh_ms)),
        )
        .await
    }

    pub(crate) async fn set_ready(&mut self, ready: bool) -> Result<(), LeaseError> {
        let now = now_ms()?;
        let ctx = &self.ctx;
        ctx.run(
            "set ready",
            ctx.op_timeout,
            sqlx::query(SET_READY)
                .bind(&ctx.cluster)
                .bind(&ctx.member)
                .bind(ready)
                .bind(&self.boot)
                .bind(now)
                .execute(&mut self.conn),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn members(&mut self) -> Result<Vec<MemberRow>, LeaseError> {
        let now = now_ms()?;
        let ctx = &self.ctx;
        let rows = ctx
            .run(
                "list members",
                ctx.op_timeout,
                sqlx::query(MEMBERS)
                    .bind(&ctx.cluster)
                    .bind(&self.boot)
                    .bind(now)
                    .fetch_all(&mut self.conn),
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

    #[allow(dead_code)]
    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }
}

fn view(ctx: &Ctx, op: &'static str, row: &SqliteRow) -> Result<LeaseView, LeaseError> {
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
    decode().map_err(|error| ctx.classify(op, &error))
}
