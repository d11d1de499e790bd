//! Reading JOC's cluster tables and writing a switch request, in the
//! shared database. Table and column names are JOC's (its PostgreSQL DDL
//! quotes the upper-case column names; table names are unquoted). Ages are
//! computed by the database in whole seconds of its UTC clock, as JOC does.

use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::view::{ClusterRow, InstanceRow, InstanceStamp, JocView};
use crate::lease::{DatabaseKind, DatabaseUrl, Options, scrub};

/// Why JOC's tables could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error(
        "JOC's tables JOC_CLUSTER and JOC_INSTANCES do not exist in {url}: JOC creates them at its first start (or its installer's setup); until then this member is not ready"
    )]
    NotInstalled { url: String },
    #[error(
        "reading or writing JOC's tables in {url} failed: {detail}; check the database and the Secret"
    )]
    Database { url: String, detail: String },
    #[error(
        "JOC's tables in {url} did not answer within {bound:?}{locked}: the next look tries again"
    )]
    Timeout {
        url: String,
        bound: Duration,
        locked: &'static str,
    },
}

/// How long a write waits for a row lock on JOC's tables, on the server. A
/// JOC frozen or hung inside its transaction keeps its locks on
/// `JOC_CLUSTER` for as long as it is stopped (the sidecar's switch request
/// once waited 61 s behind one, its main loop held all that time): the
/// sidecar gives up instead and tries again at its next look, once the
/// fence has ended that JOC's session.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// How long any statement on JOC's tables may take, on the server and, in
/// case the server does not answer at all, on this side.
const STATEMENT_BOUND: Duration = Duration::from_secs(3);

const LOCKED: &str = " (a row of JOC_CLUSTER or JOC_INSTANCES is locked by another session: a JOC frozen or hung inside its transaction?)";

/// What [`JocTables::release_fenced_member`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FencedRelease {
    /// The `JOC_CLUSTER` row named the fenced member and had no switch
    /// pending: deleted.
    pub cluster_row_deleted: bool,
    /// The fenced member's `JOC_INSTANCES` row exists: its heartbeat is now
    /// 1970-01-01.
    pub heartbeat_reset: bool,
}

/// The connection pool, typed by the client library's driver (the SQL is
/// chosen by [`DatabaseKind`]).
enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// JOC's tables in the shared database (one lazily opened connection).
pub struct JocTables {
    pool: Pool,
    kind: DatabaseKind,
    url: DatabaseUrl,
    exceeded_interval: Duration,
}

/// kind ('c' cluster, 'i' instance), member id, heartbeat age, switch
/// member id, switch heartbeat age, API server (0/1), and of an instance
/// `STARTED_AT` and `HEART_BEAT` as text.
type ViewRow = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
);

/// The same decoding for each database product's row type.
macro_rules! fetch_view_rows {
    ($pool:expr, $sql:expr) => {
        sqlx::query(AssertSqlSafe($sql))
            .fetch_all($pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                            r.try_get(5)?,
                            r.try_get(6)?,
                            r.try_get(7)?,
                        ))
                    })
                    .collect::<Result<Vec<ViewRow>, sqlx::Error>>()
            })
    };
}

/// The same binding of text parameters for each database product.
macro_rules! execute_bound {
    ($pool:expr, $sql:expr, $params:expr) => {{
        let mut query = sqlx::query($sql);
        for param in $params {
            query = query.bind(*param);
        }
        query.execute($pool).await.map(|r| r.rows_affected())
    }};
}

const PG_AGE: &str = "(EXTRACT(EPOCH FROM date_trunc('second', timezone('UTC', now()))) - EXTRACT(EPOCH FROM date_trunc('second', {col})))::bigint";
const MY_AGE: &str = "CAST(TIMESTAMPDIFF(SECOND, {col}, UTC_TIMESTAMP()) AS SIGNED)";
const LITE_AGE: &str =
    "(CAST(strftime('%s','now') AS INTEGER) - CAST(strftime('%s', {col}) AS INTEGER))";

impl JocTables {
    pub fn new(url: &DatabaseUrl, exceeded_interval: Duration) -> JocTables {
        let timeout = Duration::from_secs(5);
        let lock_wait = format!("{}ms", LOCK_WAIT.as_millis());
        let statement = format!("{}ms", STATEMENT_BOUND.as_millis());
        let pool = match url.options().clone() {
            Options::Postgres(o) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(o.application_name("joc-ha-js7").options([
                        ("lock_timeout", lock_wait.as_str()),
                        ("statement_timeout", statement.as_str()),
                    ])),
            ),
            Options::MySql(o) => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    // Whole seconds; MySQL and MariaDB both know these two.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let sql = format!(
                                "SET SESSION innodb_lock_wait_timeout = {}, lock_wait_timeout = {}",
                                LOCK_WAIT.as_secs().max(1),
                                STATEMENT_BOUND.as_secs().max(1)
                            );
                            sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
                            Ok(())
                        })
                    })
                    .connect_lazy_with(o),
            ),
            Options::Sqlite(o) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(o.busy_timeout(Duration::from_secs(1))),
            ),
        };
        JocTables {
            pool,
            kind: url.kind(),
            url: url.clone(),
            exceeded_interval,
        }
    }

    fn error(&self, error: sqlx::Error) -> TablesError {
        let text = error.to_string();
        let timed_out = match &error {
            // lock_not_available (PostgreSQL), ER_LOCK_WAIT_TIMEOUT (MySQL);
            // query_canceled (PostgreSQL's statement_timeout).
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                Some((STATEMENT_BOUND, ""))
            }
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("55P03")
                    || text.contains("Lock wait timeout exceeded") =>
            {
                Some((LOCK_WAIT, LOCKED))
            }
            _ => None,
        };
        if let Some((bound, locked)) = timed_out {
            return TablesError::Timeout {
                url: self.url.redacted().to_owned(),
                bound,
                locked,
            };
        }
        let missing_table = match &error {
            sqlx::Error::Database(db) => {
                // undefined_table (PostgreSQL), ER_NO_SUCH_TABLE (MySQL).
                db.code().as_deref() == Some("42P01")
                    || db.code().as_deref() == Some("42S02")
                    || text.contains("no such table")
                    || text.contains("doesn't exist")
            }
            _ => false,
        };
        if missing_table {
            TablesError::NotInstalled {
                url: self.url.redacted().to_owned(),
            }
        } else {
            TablesError::Database {
                url: self.url.redacted().to_owned(),
                detail: scrub(&text, self.url.secrets()),
            }
        }
    }

    /// JOC's cluster row and instances, in one statement.
    pub async fn read(&self) -> Result<JocView, TablesError> {
        let (age, cast_api, zero, quote) = match self.kind {
            DatabaseKind::Postgresql => (
                PG_AGE,
                "CAST(\"API_SERVER\" AS bigint)",
                "CAST(0 AS bigint)",
                "\"",
            ),
            DatabaseKind::Mysql | DatabaseKind::Mariadb => (
                MY_AGE,
                "CAST(API_SERVER AS SIGNED)",
                "CAST(0 AS SIGNED)",
                "",
            ),
            DatabaseKind::Sqlite => (LITE_AGE, "CAST(API_SERVER AS INTEGER)", "0", ""),
        };
        let col = |name: &str| format!("{quote}{name}{quote}");
        let age_of = |name: &str| age.replace("{col}", &col(name));
        let (null_text, null_int) = match self.kind {
            DatabaseKind::Postgresql => ("CAST(NULL AS varchar)", "CAST(NULL AS bigint)"),
            _ => ("NULL", "NULL"),
        };
        // Compared with the previous read only (own_health): any text form
        // that changes when the value does will do.
        let text_type = match self.kind {
            DatabaseKind::Postgresql => "varchar",
            DatabaseKind::Mysql | DatabaseKind::Mariadb => "CHAR",
            DatabaseKind::Sqlite => "TEXT",
        };
        let as_text = |name: &str| format!("CAST({} AS {text_type})", col(name));
        let count = match self.kind {
            DatabaseKind::Postgresql => "CAST(COUNT(*) AS bigint)",
            DatabaseKind::Mysql | DatabaseKind::Mariadb => "CAST(COUNT(*) AS SIGNED)",
            DatabaseKind::Sqlite => "COUNT(*)",
        };
        // Rows 'c': JOC_CLUSTER; 'i': JOC_INSTANCES, the fourth column its
        // SECURITY_LEVEL; 'n': registered Controllers, the second column the
        // security level number and the third their count (fact 9).
        let sql = format!(
            "SELECT 'c' AS kind, {member}, {age}, {switch}, {switch_age}, {zero} AS api, {null_text}, {null_text} FROM JOC_CLUSTER WHERE {id} = 'cluster' \
             UNION ALL SELECT 'i', {member}, {age}, {level_text}, {null_int}, {cast_api}, {started}, {beat} FROM JOC_INSTANCES \
             UNION ALL SELECT 'n', {level_number}, {count}, {null_text}, {null_int}, {zero}, {null_text}, {null_text} FROM INV_JS_INSTANCES GROUP BY {level}",
            level = col("SECURITY_LEVEL"),
            level_text = as_text("SECURITY_LEVEL"),
            level_number = as_text("SECURITY_LEVEL"),
            started = as_text("STARTED_AT"),
            beat = as_text("HEART_BEAT"),
            member = col("MEMBER_ID"),
            age = age_of("HEART_BEAT"),
            switch = col("SWITCH_MEMBER_ID"),
            switch_age = age_of("SWITCH_HEART_BEAT"),
            id = col("ID"),
        );
        let rows: Vec<ViewRow> = self
            .bounded(async {
                match &self.pool {
                    Pool::Postgres(pool) => fetch_view_rows!(pool, sql),
                    Pool::MySql(pool) => fetch_view_rows!(pool, sql),
                    Pool::Sqlite(pool) => fetch_view_rows!(pool, sql),
                }
            })
            .await?;
        let mut cluster = None;
        let mut instances = Vec::new();
        let mut controllers = Vec::new();
        for (kind, member_id, age, switch_member_id, switch_age, api, started_at, heart_beat) in
            rows
        {
            if kind == "n" {
                if let Ok(level) = member_id.trim().parse::<i64>() {
                    controllers.push((level, age.unwrap_or(0)));
                }
                continue;
            }
            // A missing heartbeat counts as exceeded.
            let heart_beat_age_s = age.unwrap_or(i64::MAX);
            if kind == "c" {
                cluster = Some(ClusterRow {
                    member_id,
                    heart_beat_age_s,
                    switch_member_id,
                    switch_heart_beat_age_s: switch_age,
                });
            } else {
                instances.push(InstanceRow {
                    member_id,
                    heart_beat_age_s,
                    api_server: api != 0,
                    stamp: InstanceStamp {
                        started_at,
                        heart_beat,
                    },
                    security_level: switch_member_id,
                });
            }
        }
        Ok(JocView::new(cluster, instances, self.exceeded_interval).with_controllers(controllers))
    }

    /// Asks JOC to make `target` active: sets `SWITCH_MEMBER_ID` and
    /// `SWITCH_HEART_BEAT` (database UTC now) — what JOC's `switch_member`
    /// writes when the receiving instance is not the active one — provided
    /// JOC's active member is still `active`. True if written.
    pub async fn request_switch(&self, active: &str, target: &str) -> Result<bool, TablesError> {
        let sql = match self.kind {
            DatabaseKind::Postgresql => {
                "UPDATE JOC_CLUSTER SET \"SWITCH_MEMBER_ID\" = $1, \"SWITCH_HEART_BEAT\" = timezone('UTC', now()) \
                 WHERE \"ID\" = 'cluster' AND \"MEMBER_ID\" = $2"
            }
            DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                "UPDATE JOC_CLUSTER SET SWITCH_MEMBER_ID = ?, SWITCH_HEART_BEAT = UTC_TIMESTAMP() \
                 WHERE ID = 'cluster' AND MEMBER_ID = ?"
            }
            DatabaseKind::Sqlite => {
                "UPDATE JOC_CLUSTER SET SWITCH_MEMBER_ID = ?1, SWITCH_HEART_BEAT = strftime('%Y-%m-%d %H:%M:%S','now') \
                 WHERE ID = 'cluster' AND MEMBER_ID = ?2"
            }
        };
        self.execute(sql, &[target, active]).await
    }

    /// Writes JOC's cluster heartbeat (`JOC_CLUSTER.HEART_BEAT`, database
    /// UTC now, as JOC's `updateHeartBeat`) for `member_id`'s JOC while it
    /// is JOC's active member and waits for its first Controller
    /// ([`crate::js7::keeps_waiting_heart_beat`]); only if the row still
    /// names it.
    pub async fn keep_waiting_heart_beat(&self, member_id: &str) -> Result<bool, TablesError> {
        let sql = match self.kind {
            DatabaseKind::Postgresql => {
                "UPDATE JOC_CLUSTER SET \"HEART_BEAT\" = timezone('UTC', now()) \
                 WHERE \"ID\" = 'cluster' AND \"MEMBER_ID\" = $1"
            }
            DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                "UPDATE JOC_CLUSTER SET HEART_BEAT = UTC_TIMESTAMP() WHERE ID = 'cluster' AND MEMBER_ID = ?"
            }
            DatabaseKind::Sqlite => {
                "UPDATE JOC_CLUSTER SET HEART_BEAT = strftime('%Y-%m-%d %H:%M:%S','now') \
                 WHERE ID = 'cluster' AND MEMBER_ID = ?1"
            }
        };
        self.execute(sql, &[member_id]).await
    }

    /// Takes a left-over switch request away (both `SWITCH_*` columns back to
    /// NULL), only if it still names `target`: a request written meanwhile
    /// stays. JOC itself clears a request only when its target executes it.
    pub async fn clear_switch_request(&self, target: &str) -> Result<bool, TablesError> {
        let sql = match self.kind {
            DatabaseKind::Postgresql => {
                "UPDATE JOC_CLUSTER SET \"SWITCH_MEMBER_ID\" = NULL, \"SWITCH_HEART_BEAT\" = NULL \
                 WHERE \"ID\" = 'cluster' AND \"SWITCH_MEMBER_ID\" = $1"
            }
            DatabaseKind::Mysql | DatabaseKind::Mariadb | DatabaseKind::Sqlite => {
                "UPDATE JOC_CLUSTER SET SWITCH_MEMBER_ID = NULL, SWITCH_HEART_BEAT = NULL \
                 WHERE ID = 'cluster' AND SWITCH_MEMBER_ID = ?"
            }
        };
        self.execute(sql, &[target]).await
    }

    /// After a confirmed fence of `member_id`'s JVM, what JOC's own clean
    /// shutdown writes (docs/joc-facts.md fact 12, JC `close`): the
    /// instance's `JOC_INSTANCES.HEART_BEAT` to 1970-01-01 (stale at once),
    /// and the `JOC_CLUSTER` row deleted if it still names `member_id` and no
    /// switch is pending. The other JOCs then elect a new active member at
    /// their next poll instead of waiting out the heartbeat timeout. Only
    /// call this once the JVM is gone: a live JOC would write both back.
    pub async fn release_fenced_member(
        &self,
        member_id: &str,
    ) -> Result<FencedRelease, TablesError> {
        let (reset, delete) = match self.kind {
            DatabaseKind::Postgresql => (
                "UPDATE JOC_INSTANCES SET \"HEART_BEAT\" = TIMESTAMP '1970-01-01 00:00:00' WHERE \"MEMBER_ID\" = $1",
                "DELETE FROM JOC_CLUSTER WHERE \"ID\" = 'cluster' AND \"MEMBER_ID\" = $1 AND \"SWITCH_MEMBER_ID\" IS NULL",
            ),
            DatabaseKind::Mysql | DatabaseKind::Mariadb | DatabaseKind::Sqlite => (
                "UPDATE JOC_INSTANCES SET HEART_BEAT = '1970-01-01 00:00:00' WHERE MEMBER_ID = ?",
                "DELETE FROM JOC_CLUSTER WHERE ID = 'cluster' AND MEMBER_ID = ? AND SWITCH_MEMBER_ID IS NULL",
            ),
        };
        // JOC's order: the row first, then the instance heartbeat.
        let cluster_row_deleted = self.execute(delete, &[member_id]).await?;
        let heartbeat_reset = self.execute(reset, &[member_id]).await?;
        Ok(FencedRelease {
            cluster_row_deleted,
            heartbeat_reset,
        })
    }

    /// JOC's cluster row while it names `member_id` and that member's
    /// instance row still has `started_at` (read as text, as
    /// [`JocTables::read`] reads it): its JVM is gone by Kubernetes' word
    /// and no new JVM of that member registered since, so none is running
    /// or about to resume services by this row.
    ///
    /// With a `successor` (the lease holder's own live JOC): the row's
    /// heartbeat is set to 1970-01-01, exceeded at once, and a switch
    /// request names the successor. At their next poll JOC's standbys find
    /// the active heartbeat exceeded; the successor takes over, every other
    /// standby waits for it ("wait for switchMember", JocCluster.java
    /// `handleCurrentMemberOnProcess`), and a new JVM of the gone member
    /// (same member id) executes the request: one JOC takes over, the one
    /// holding the lease. Without one: the row is deleted, what JOC's clean
    /// shutdown writes (docs/joc-facts.md fact 12), and JOC's instances
    /// elect at their next poll. True if written.
    pub async fn release_gone_active(
        &self,
        member_id: &str,
        started_at: &str,
        successor: Option<&str>,
    ) -> Result<bool, TablesError> {
        let Some(successor) = successor else {
            let sql = match self.kind {
                DatabaseKind::Postgresql => {
                    "DELETE FROM JOC_CLUSTER WHERE \"ID\" = 'cluster' AND \"MEMBER_ID\" = $1 \
                     AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.\"MEMBER_ID\" = $1 AND CAST(i.\"STARTED_AT\" AS varchar) = $2)"
                }
                DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                    "DELETE FROM JOC_CLUSTER WHERE ID = 'cluster' AND MEMBER_ID = ? \
                     AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.MEMBER_ID = ? AND CAST(i.STARTED_AT AS CHAR) = ?)"
                }
                DatabaseKind::Sqlite => {
                    "DELETE FROM JOC_CLUSTER WHERE ID = 'cluster' AND MEMBER_ID = ?1 \
                     AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.MEMBER_ID = ?1 AND CAST(i.STARTED_AT AS TEXT) = ?2)"
                }
            };
            return match self.kind {
                DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                    self.execute(sql, &[member_id, member_id, started_at]).await
                }
                _ => self.execute(sql, &[member_id, started_at]).await,
            };
        };
        let sql = match self.kind {
            DatabaseKind::Postgresql => {
                "UPDATE JOC_CLUSTER SET \"HEART_BEAT\" = TIMESTAMP '1970-01-01 00:00:00', \
                 \"SWITCH_MEMBER_ID\" = $3, \"SWITCH_HEART_BEAT\" = timezone('UTC', now()) \
                 WHERE \"ID\" = 'cluster' AND \"MEMBER_ID\" = $1 \
                 AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.\"MEMBER_ID\" = $1 AND CAST(i.\"STARTED_AT\" AS varchar) = $2)"
            }
            // MySQL refuses a subquery on the updated table only; this one
            // reads JOC_INSTANCES.
            DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                "UPDATE JOC_CLUSTER SET HEART_BEAT = '1970-01-01 00:00:00', \
                 SWITCH_MEMBER_ID = ?, SWITCH_HEART_BEAT = UTC_TIMESTAMP() \
                 WHERE ID = 'cluster' AND MEMBER_ID = ? \
                 AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.MEMBER_ID = ? AND CAST(i.STARTED_AT AS CHAR) = ?)"
            }
            DatabaseKind::Sqlite => {
                "UPDATE JOC_CLUSTER SET HEART_BEAT = '1970-01-01 00:00:00', \
                 SWITCH_MEMBER_ID = ?3, SWITCH_HEART_BEAT = strftime('%Y-%m-%d %H:%M:%S','now') \
                 WHERE ID = 'cluster' AND MEMBER_ID = ?1 \
                 AND EXISTS (SELECT 1 FROM JOC_INSTANCES i WHERE i.MEMBER_ID = ?1 AND CAST(i.STARTED_AT AS TEXT) = ?2)"
            }
        };
        match self.kind {
            DatabaseKind::Mysql | DatabaseKind::Mariadb => {
                self.execute(sql, &[successor, member_id, member_id, started_at])
                    .await
            }
            _ => self.execute(sql, &[member_id, started_at, successor]).await,
        }
    }

    /// Runs a statement within [`STATEMENT_BOUND`] (plus a margin for the
    /// server's own bound to answer first).
    async fn bounded<T>(
        &self,
        statement: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, TablesError> {
        match tokio::time::timeout(STATEMENT_BOUND + Duration::from_secs(1), statement).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(TablesError::Timeout {
                url: self.url.redacted().to_owned(),
                bound: STATEMENT_BOUND + Duration::from_secs(1),
                locked: "",
            }),
        }
    }

    /// Runs an UPDATE with text parameters; whether it changed a row.
    async fn execute(&self, sql: &'static str, params: &[&str]) -> Result<bool, TablesError> {
        let affected = self
            .bounded(async {
                match &self.pool {
                    Pool::Postgres(pool) => execute_bound!(pool, sql, params),
                    Pool::MySql(pool) => execute_bound!(pool, sql, params),
                    Pool::Sqlite(pool) => execute_bound!(pool, sql, params),
                }
            })
            .await?;
        Ok(affected > 0)
    }
}
