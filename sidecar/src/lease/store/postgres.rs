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

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions as _, Connection, Row};

use super::{
    CHANNEL, CONNECT_TIMEOUT, Ctx, LOCK_WAIT, LeaseView, LockWait, MemberRow, SessionEvent,
    member_row, new_session_key,
};
use crate::lease::error::LeaseError;

const VIEW_COLUMNS: &str = "holder, holder_session, term, \
     (extract(epoch FROM expires_at - now()) * 1000)::int8, \
     (extract(epoch FROM now() - renewed_at) * 1000)::int8, \
     (extract(epoch FROM now()) * 1000)::int8";

/// True when this connection holds session lock `$3` (a renew or take-over on
/// a silently replaced connection must fail).
macro_rules! own_lock {
    () => {
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
         AND granted AND objsubid = 1 AND classid::int8 = ($3::int8 >> 32) \
         AND objid::int8 = ($3::int8 & 4294967295))"
    };
}

const HEARTBEAT: &str = "WITH hb AS (INSERT INTO joc_ha_member (cluster_id, member, kind, ready, session_key, heartbeat_at) \
     VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (cluster_id, member) DO UPDATE \
     SET kind = EXCLUDED.kind, ready = EXCLUDED.ready, session_key = EXCLUDED.session_key, \
     heartbeat_at = now()) \
     SELECT holder, holder_session, term, \
     (extract(epoch FROM expires_at - now()) * 1000)::int8, \
     (extract(epoch FROM now() - renewed_at) * 1000)::int8, \
     (extract(epoch FROM now()) * 1000)::int8 \
     FROM joc_ha_lease WHERE cluster_id = $1";

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
     COALESCE(l.holder = m.member AND l.expires_at > now(), false), \
     (extract(epoch FROM now() - l.renewed_at) * 1000)::int8 \
     FROM joc_ha_member m LEFT JOIN joc_ha_lease l ON l.cluster_id = m.cluster_id \
     WHERE m.cluster_id = $1 ORDER BY m.member";

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../migrations/postgres");
    migrator.dangerous_set_table_name("joc_ha_migrations");
    migrator.set_ignore_missing(true);
    migrator
}

pub(crate) struct PgStore {
    ctx: Arc<Ctx>,
    session: PgListener,
    _pool: PgPool,
    pub(crate) key: i64,
}

impl PgStore {
    pub(crate) async fn connect(
        ctx: Arc<Ctx>,
        options: PgConnectOptions,
    ) -> Result<(PgStore, Option<PgWaiter>), LeaseError> {
        // The waiter connection comes first: a plain connect reports refused
        // logins and unreachable servers precisely (a pool would retry them
        // until its timeout and then only say "timed out").
        let mut waiter = PgWaiter::connect(&ctx, options.clone()).await?;
        if ctx.migrate {
            let result = tokio::time::timeout(
                CONNECT_TIMEOUT * 3,
                migrator().run_direct(None, &mut waiter.conn, false),
            )
            .await;
            ctx.statements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(ctx.migration_error(&error)),
                Err(_) => {
                    return Err(LeaseError::Timeout {
                        op: "migrate",
                        target: ctx.target(),
                        timeout: CONNECT_TIMEOUT * 3,
                    });
                }
            }
        }
        let present: bool = ctx
            .run(
                "check schema",
                ctx.op_timeout,
                sqlx::query_scalar(
                    "SELECT to_regclass('joc_ha_lease') IS NOT NULL \
                     AND to_regclass('joc_ha_member') IS NOT NULL",
                )
                .fetch_one(&mut waiter.conn),
            )
            .await?;
        if !present {
            return Err(ctx.schema_missing());
        }

        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let mut session = ctx.open(PgListener::connect_with(&pool)).await?;
        // A lost connection must surface as Ok(None) from try_recv, never be
        // replaced silently: the session lock lives and dies with it.
        session.eager_reconnect(false);
        session.ignore_pool_close_event(true);
        ctx.run("listen", ctx.op_timeout, session.listen(CHANNEL))
            .await?;
        let key = new_session_key();
        let locked: bool = ctx
            .run(
                "session lock",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut session),
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
            crate::lease::MemberKind::Member => Some(waiter),
            crate::lease::MemberKind::ApiServer => {
                let _ = waiter.conn.close().await;
                None
            }
        };
        Ok((
            PgStore {
                ctx,
                session,
                _pool: pool,
                key,
            },
            waiter,
        ))
    }

    pub(crate) async fn heartbeat(&mut self, ready: bool) -> Result<Option<LeaseView>, LeaseError> {
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
                    .fetch_optional(&mut self.session),
            )
            .await?;
        row.map(|row| view(ctx, "heartbeat", &row)).transpose()
    }

    pub(crate) async fn read(&mut self) -> Result<Option<LeaseView>, LeaseError> {
        let ctx = &self.ctx;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM joc_ha_lease WHERE cluster_id = $1"
        ));
        let row = ctx
            .run(
                "read lease",
                ctx.op_timeout,
                sqlx::query(sql)
                    .bind(&ctx.cluster)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        row.map(|row| view(ctx, "read lease", &row)).transpose()
    }

    pub(crate) async fn register(&mut self, ready: bool) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "register",
            ctx.op_timeout,
            sqlx::query(REGISTER)
                .bind(&ctx.cluster)
                .bind(&ctx.member)
                .bind(ctx.kind.as_str())
                .bind(ready)
                .bind(self.key)
                .execute(&mut self.session),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn acquire(&mut self, term: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "acquire",
                ctx.op_timeout,
                sqlx::query(ACQUIRE)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(ctx.ttl_ms)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn steal(&mut self, term: i64, holder_key: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "take over",
                ctx.op_timeout,
                sqlx::query(STEAL)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(ctx.ttl_ms)
                    .bind(holder_key)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn renew(&mut self, term: i64, timeout: Duration) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "renew",
                timeout,
                sqlx::query(RENEW)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(ctx.ttl_ms)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn release(&mut self, term: i64) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "release",
                ctx.op_timeout,
                sqlx::query(RELEASE)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn hand_over(&mut self, term: i64, target: &str) -> Result<bool, LeaseError> {
        let ctx = &self.ctx;
        let row = ctx
            .run(
                "hand over",
                ctx.op_timeout,
                sqlx::query(HAND_OVER)
                    .bind(&ctx.cluster)
                    .bind(&ctx.member)
                    .bind(self.key)
                    .bind(term)
                    .bind(ctx.ttl_ms)
                    .bind(target)
                    .bind(ctx.fresh_ms)
                    .fetch_optional(&mut self.session),
            )
            .await?;
        Ok(row.is_some())
    }

    pub(crate) async fn set_ready(&mut self, ready: bool) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        ctx.run(
            "set ready",
            ctx.op_timeout,
            sqlx::query(SET_READY)
                .bind(&ctx.cluster)
                .bind(&ctx.member)
                .bind(ready)
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
                    row.try_get(4)?,
                    row.try_get(5)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|error| ctx.classify("list members", &error))
    }

    pub(crate) async fn cancel_wait(&mut self, backend_id: i64) -> Result<(), LeaseError> {
        let ctx = &self.ctx;
        let pid = i32::try_from(backend_id).unwrap_or(0);
        ctx.run(
            "cancel wait",
            ctx.op_timeout,
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut self.session),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn next_event(&mut self) -> SessionEvent {
        loop {
            match self.session.try_recv().await {
                Ok(Some(notification)) => {
                    if notification.payload() == self.ctx.cluster {
                        return SessionEvent::Notified;
                    }
                }
                Ok(None) => {
                    return SessionEvent::Lost(LeaseError::ConnectionLost {
                        op: "listen",
                        target: self.ctx.target(),
                        detail: "the server closed the session connection".to_owned(),
                    });
                }
                Err(error) => return SessionEvent::Lost(self.ctx.classify("listen", &error)),
            }
        }
    }
}

fn view(ctx: &Ctx, op: &'static str, row: &PgRow) -> Result<LeaseView, LeaseError> {
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

/// The waiter connection: blocks in `pg_advisory_lock(holder key)` with a
/// `lock_timeout` of [`LOCK_WAIT`].
pub(crate) struct PgWaiter {
    conn: sqlx::PgConnection,
    pub(crate) backend_id: i64,
}

impl PgWaiter {
    pub(crate) async fn connect(
        ctx: &Ctx,
        options: PgConnectOptions,
    ) -> Result<PgWaiter, LeaseError> {
        let lock_timeout = format!("{}ms", LOCK_WAIT.as_millis());
        // Waiting is this connection's job: no slow-statement warnings.
        let options = options
            .options([("lock_timeout", lock_timeout.as_str())])
            .disable_statement_logging();
        let mut conn = ctx.open(sqlx::PgConnection::connect_with(&options)).await?;
        let pid: i32 = ctx
            .run(
                "backend id",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn),
            )
            .await?;
        Ok(PgWaiter {
            conn,
            backend_id: i64::from(pid),
        })
    }

    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        ctx.run(
            "watch holder",
            ctx.op_timeout,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut self.conn),
        )
        .await
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        ctx.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait = sqlx::query("SELECT pg_advisory_lock($1)::text")
            .bind(key)
            .execute(&mut self.conn);
        match tokio::time::timeout(LOCK_WAIT + Duration::from_secs(5), wait).await {
            Ok(Ok(_)) => Ok(LockWait::Acquired),
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("55P03") => {
                Ok(LockWait::TimedOut)
            }
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("57014") => {
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
        let released: bool = ctx
            .run(
                "watch holder",
                ctx.op_timeout,
                sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                    .bind(key)
                    .fetch_one(&mut self.conn),
            )
            .await?;
        if released {
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
