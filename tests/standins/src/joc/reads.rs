//! Reads

use anyhow::{Context, Result};
use sqlx::{AnyConnection, AssertSqlSafe};

use super::sql::{connect, epoch, from_epoch, int, now_utc, sql};
use super::{CLUSTER_ROW_ID, Dialect};

/// The JOC_CLUSTER row, times as whole epoch seconds (UTC), with the
/// database's UTC now read in the same statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub member_id: String,
    pub heart_beat: i64,
    pub switch_member_id: Option<String>,
    pub switch_heart_beat: Option<i64>,
    pub notification_member_id: Option<String>,
    pub notification: Option<String>,
    /// The database's UTC now when read.
    pub db_now: i64,
}

/// A JOC_INSTANCES row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub member_id: String,
    pub cluster_id: String,
    pub data_directory: String,
    pub title: Option<String>,
    pub ordering: i64,
    pub uri: Option<String>,
    pub api_server: bool,
    pub version: Option<String>,
    /// HEART_BEAT, epoch seconds UTC.
    pub heart_beat: i64,
    /// Database UTC now minus HEART_BEAT, whole seconds.
    pub age_s: i64,
    /// OS_ID: the INV_OPERATING_SYSTEMS row of the host.
    pub os_id: i64,
    pub security_level: String,
    /// TIMEZONE: the JVM's zone.
    pub timezone: String,
    /// STARTED_AT, epoch seconds (written from the JVM's clock).
    pub started_at: i64,
}

impl Instance {
    /// Fresh = not exceeded by `JocCluster.isHeartBeatExceeded`.
    pub fn is_fresh(&self, heart_beat_exceeded_interval_s: u64) -> bool {
        self.age_s <= heart_beat_exceeded_interval_s as i64
    }

    /// JOC's name for it in messages: `title`, else `clusterId#ordering`.
    pub fn display_name(&self) -> String {
        match &self.title {
            Some(t) => t.clone(),
            None => format!("{}#{}", self.cluster_id, self.ordering),
        }
    }
}

type ClusterTuple = (
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);

pub(super) async fn read_cluster(
    conn: &mut AnyConnection,
    d: Dialect,
) -> Result<Option<ClusterRow>> {
    // JOC: `from DBItemJocCluster` (the single row).
    let q = sql(
        d,
        &format!(
            r#"SELECT "MEMBER_ID", {}, "SWITCH_MEMBER_ID", {}, "NOTIFICATION_MEMBER_ID", "NOTIFICATION", {} FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
            epoch(d, "\"HEART_BEAT\""),
            epoch(d, "\"SWITCH_HEART_BEAT\""),
            epoch(d, now_utc(d)),
        ),
    );
    let row: Option<ClusterTuple> = sqlx::query_as(AssertSqlSafe(q))
        .fetch_optional(&mut *conn)
        .await
        .context("reading JOC_CLUSTER")?;
    Ok(row.map(|r| ClusterRow {
        member_id: r.0,
        heart_beat: r.1,
        switch_member_id: r.2,
        switch_heart_beat: r.3,
        notification_member_id: r.4,
        notification: r.5,
        db_now: r.6,
    }))
}

pub(super) type InstanceTuple = (
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
    String,
    String,
    i64,
);

pub(super) fn instance_select(d: Dialect) -> String {
    format!(
        r#"SELECT "MEMBER_ID", "CLUSTER_ID", "DATA_DIRECTORY", "TITLE", {}, "URI", {}, "VERSION", {}, {}, {}, "SECURITY_LEVEL", "TIMEZONE", {} FROM JOC_INSTANCES"#,
        int(d, "\"ORDERING\""),
        int(d, "\"API_SERVER\""),
        epoch(d, "\"HEART_BEAT\""),
        epoch(d, now_utc(d)),
        int(d, "\"OS_ID\""),
        epoch(d, "\"STARTED_AT\""),
    )
}

pub(super) fn instance_of(r: InstanceTuple) -> Instance {
    Instance {
        member_id: r.0,
        cluster_id: r.1,
        data_directory: r.2,
        title: r.3,
        ordering: r.4,
        uri: r.5,
        api_server: r.6 != 0,
        version: r.7,
        heart_beat: r.8,
        age_s: r.9 - r.8,
        os_id: r.10,
        security_level: r.11,
        timezone: r.12,
        started_at: r.13,
    }
}

pub(super) async fn read_instance(
    conn: &mut AnyConnection,
    d: Dialect,
    member_id: &str,
) -> Result<Option<Instance>> {
    let q = sql(
        d,
        &format!(r#"{} WHERE "MEMBER_ID" = ?"#, instance_select(d)),
    );
    let row: Option<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await
        .context("reading JOC_INSTANCES")?;
    Ok(row.map(instance_of))
}

/// The JOC_CLUSTER row, if any.
pub async fn cluster_row(url: &str) -> Result<Option<ClusterRow>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    read_cluster(&mut conn, d).await
}

/// Which member JOC's protocol says is active: JOC_CLUSTER.MEMBER_ID.
pub async fn joc_active_member(url: &str) -> Result<Option<String>> {
    Ok(cluster_row(url).await?.map(|r| r.member_id))
}

/// Every JOC_INSTANCES row, ordered by ORDERING then MEMBER_ID, with its
/// heartbeat's age by database time.
pub async fn instances(url: &str) -> Result<Vec<Instance>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(r#"{} ORDER BY "ORDERING", "MEMBER_ID""#, instance_select(d)),
    );
    let rows: Vec<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
        .fetch_all(&mut conn)
        .await
        .context("reading JOC_INSTANCES")?;
    Ok(rows.into_iter().map(instance_of).collect())
}

/// Writes a switch request into JOC_CLUSTER as the sidecar does
/// (SWITCH_MEMBER_ID and SWITCH_HEART_BEAT), the heartbeat `age_s` seconds
/// old by database time. For tests.
pub async fn write_switch_request(url: &str, target: &str, age_s: i64) -> Result<u64> {
    let d = Dialect::of_url(url)?;
    let now = db_now(url).await?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"UPDATE JOC_CLUSTER SET "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {} WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
            from_epoch(d)
        ),
    );
    Ok(sqlx::query(AssertSqlSafe(q))
        .bind(target)
        .bind(now - age_s)
        .execute(&mut conn)
        .await
        .context("writing the switch request")?
        .rows_affected())
}

/// Inserts a second JOC_CLUSTER row (id `id`, heartbeat 2000-01-01) that JOC
/// never reads: a witness of updates without WHERE (docs/joc-facts.md fact 16). For tests.
pub async fn insert_witness_cluster_row(url: &str, id: &str) -> Result<()> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO JOC_CLUSTER ("ID", "MEMBER_ID", "HEART_BEAT") VALUES (?, ?, {})"#,
            from_epoch(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(id)
        .bind(format!("{id}:0"))
        .bind(946_684_800_i64)
        .execute(&mut conn)
        .await
        .context("inserting the witness row")?;
    Ok(())
}

/// HEART_BEAT of the JOC_CLUSTER row `id`, epoch seconds.
pub async fn cluster_heart_beat_of(url: &str, id: &str) -> Result<Option<i64>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"SELECT {} FROM JOC_CLUSTER WHERE "ID" = ?"#,
            epoch(d, "\"HEART_BEAT\"")
        ),
    );
    Ok(sqlx::query_scalar(AssertSqlSafe(q))
        .bind(id)
        .fetch_optional(&mut conn)
        .await?)
}

/// Holds a row lock on JOC_CLUSTER's row (`SELECT … FOR UPDATE` in an open
/// transaction) until [`ClusterRowLock::write_request_and_commit`]: a
/// member's UPDATE blocks meanwhile, after its read. For the rewrite race
/// (docs/joc-facts.md fact 15) in tests.
pub struct ClusterRowLock {
    conn: AnyConnection,
    dialect: Dialect,
}

impl ClusterRowLock {
    pub async fn take(url: &str) -> Result<ClusterRowLock> {
        let dialect = Dialect::of_url(url)?;
        let mut conn = connect(url).await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        sqlx::query(AssertSqlSafe(sql(
            dialect,
            &format!(
                r#"SELECT "MEMBER_ID" FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}' FOR UPDATE"#
            ),
        )))
        .fetch_optional(&mut conn)
        .await
        .context("locking the JOC_CLUSTER row")?;
        Ok(ClusterRowLock { conn, dialect })
    }

    /// Writes a fresh switch request to `target` in the locked transaction
    /// and commits; returns the rows the UPDATE changed (1: it succeeded).
    pub async fn write_request_and_commit(mut self, target: &str) -> Result<u64> {
        let d = self.dialect;
        let q = sql(
            d,
            &format!(
                r#"UPDATE JOC_CLUSTER SET "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {} WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
                now_utc(d)
            ),
        );
        let changed = sqlx::query(AssertSqlSafe(q))
            .bind(target)
            .execute(&mut self.conn)
            .await
            .context("writing the switch request")?
            .rows_affected();
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        Ok(changed)
    }
}

/// The database's UTC now, whole epoch seconds.
pub async fn db_now(url: &str) -> Result<i64> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = format!("SELECT {}", epoch(d, now_utc(d)));
    Ok(sqlx::query_scalar(AssertSqlSafe(q))
        .fetch_one(&mut conn)
        .await?)
}
