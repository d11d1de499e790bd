//! A history-style workload for end-to-end tests, shaped like JOC's History
//! Service: a simulated Controller appends events with increasing ids; the
//! active stand-in cockpit copies each event after its stored cursor into the
//! history, advancing the cursor in the same transaction, fenced by its lease
//! term so that a stale active member's write is refused by the database.
//!
//! The schema is the test's own (JOC's real tables are never touched).

use anyhow::Result;
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection};

/// Which SQL dialect a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    pub fn of_url(url: &str) -> Result<Dialect> {
        if url.starts_with("postgres") {
            Ok(Dialect::Postgres)
        } else if url.starts_with("mysql") || url.starts_with("mariadb") {
            Ok(Dialect::MySql)
        } else if url.starts_with("sqlite") {
            Ok(Dialect::Sqlite)
        } else {
            anyhow::bail!("unsupported database URL scheme")
        }
    }

    /// The n-th (1-based) bind placeholder.
    fn bind(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }
}

/// A connection to a test database of any kind (SQLite waits up to 5 s for
/// a lock held by another process).
pub async fn connect(url: &str) -> anyhow::Result<sqlx::AnyConnection> {
    use anyhow::Context as _;
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.with_context(|| {
        format!(
            "cannot connect to {}",
            joc_ha_sidecar::lease::redact_url(url)
        )
    })?;
    if Dialect::of_url(url)? == Dialect::Sqlite {
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// Creates the tables (idempotent) and the cursor row.
pub async fn create_schema(url: &str) -> Result<()> {
    let mut conn = connect(url).await?;
    for statement in [
        "CREATE TABLE IF NOT EXISTS standin_events (id BIGINT PRIMARY KEY)",
        // No uniqueness on event_id on purpose: a duplicate must be visible.
        "CREATE TABLE IF NOT EXISTS standin_history (event_id BIGINT NOT NULL, member VARCHAR(200) NOT NULL, term BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS standin_cursor (id INT PRIMARY KEY, last_event BIGINT NOT NULL, term BIGINT NOT NULL)",
    ] {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT last_event FROM standin_cursor WHERE id = 1")
            .fetch_optional(&mut conn)
            .await?;
    if exists.is_none() {
        sqlx::query("INSERT INTO standin_cursor (id, last_event, term) VALUES (1, 0, 0)")
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// The simulated Controller: appends the next event id; returns it.
pub async fn append_event(conn: &mut AnyConnection, dialect: Dialect, id: i64) -> Result<()> {
    let sql = format!(
        "INSERT INTO standin_events (id) VALUES ({})",
        dialect.bind(1)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What one step of the history service did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Copied this many events.
    Copied(usize),
    /// Nothing new.
    Idle,
    /// The cursor holds a newer term: this member is stale and must stop.
    Fenced,
}

/// Copies the events after the cursor into the history in one transaction,
/// fenced by `term`: the cursor moves only if its term is not newer than ours
/// and nobody moved it since we read it.
pub async fn copy_new_events(
    conn: &mut AnyConnection,
    dialect: Dialect,
    member: &str,
    term: i64,
    batch: i64,
) -> Result<Step> {
    let mut tx = conn.begin().await?;
    let (last, cursor_term): (i64, i64) =
        sqlx::query_as("SELECT last_event, term FROM standin_cursor WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
    if cursor_term > term {
        tx.rollback().await?;
        return Ok(Step::Fenced);
    }
    let sql = format!(
        "SELECT id FROM standin_events WHERE id > {} ORDER BY id LIMIT {}",
        dialect.bind(1),
        dialect.bind(2)
    );
    let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(last)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    let Some(&new_last) = ids.last() else {
        tx.rollback().await?;
        return Ok(Step::Idle);
    };
    let sql = format!(
        "UPDATE standin_cursor SET last_event = {}, term = {} WHERE id = 1 AND last_event = {} AND term <= {}",
        dialect.bind(1),
        dialect.bind(2),
        dialect.bind(3),
        dialect.bind(4)
    );
    let moved = sqlx::query(AssertSqlSafe(sql))
        .bind(new_last)
        .bind(term)
        .bind(last)
        .bind(term)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved != 1 {
        tx.rollback().await?;
        return Ok(Step::Fenced);
    }
    let sql = format!(
        "INSERT INTO standin_history (event_id, member, term) VALUES ({}, {}, {})",
        dialect.bind(1),
        dialect.bind(2),
        dialect.bind(3)
    );
    for id in &ids {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(*id)
            .bind(member)
            .bind(term)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Step::Copied(ids.len()))
}

/// What the checker found in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryReport {
    pub events: i64,
    pub lost: i64,
    pub duplicates: i64,
}

/// Counts events missing from the history and events copied more than once.
/// Call after the workload has drained (cursor at the last event).
pub async fn check(conn: &mut AnyConnection) -> Result<HistoryReport> {
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM standin_events")
        .fetch_one(&mut *conn)
        .await?;
    let lost: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM standin_events e WHERE NOT EXISTS \
         (SELECT 1 FROM standin_history h WHERE h.event_id = e.id)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT event_id FROM standin_history \
         GROUP BY event_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(HistoryReport {
        events,
        lost,
        duplicates,
    })
}

/// The cursor's last copied event.
pub async fn cursor(conn: &mut AnyConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT last_event FROM standin_cursor WHERE id = 1")
            .fetch_one(conn)
            .await?,
    )
}
