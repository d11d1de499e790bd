//! SQL per dialect

use anyhow::{Context, Result};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

use super::Dialect;
use super::properties::SecurityLevel;

/// PostgreSQL DDL as in SOS's "Tables for PostGres" script (facts §2.1), with
/// `IF NOT EXISTS` in place of the script's `tmp()` function guards.
const POSTGRES_DDL: [&str; 9] = [
    "CREATE SEQUENCE IF NOT EXISTS SEQ_JOC_I INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    "ID"                    BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_JOC_I'),
    "CLUSTER_ID"            VARCHAR(10)   NOT NULL,
    "MEMBER_ID"             VARCHAR(165)  NOT NULL, /* HOSTNAME:hash(DATA_DIRECTORY) */
    "OS_ID"                 BIGINT        NOT NULL,
    "DATA_DIRECTORY"        VARCHAR(255)  NOT NULL,
    "SECURITY_LEVEL"        VARCHAR(10)   NOT NULL,
    "TIMEZONE"              VARCHAR(30)   NOT NULL,
    "STARTED_AT"            TIMESTAMP     NOT NULL,
    "TITLE"                 VARCHAR(30)   NULL,
    "ORDERING"              SMALLINT      DEFAULT 0 NOT NULL,
    "URI"                   VARCHAR(255)  NULL,
    "HEART_BEAT"            TIMESTAMP     NOT NULL,
    "API_SERVER"            NUMERIC(1)    NOT NULL,
    "VERSION"               VARCHAR(30)   NULL,
    "CERTIFICATE"           VARCHAR(4000) NULL,     /* X.509 Certificate*/
    CONSTRAINT UNIQUE_JI_MID UNIQUE ("MEMBER_ID"),
    PRIMARY KEY ("ID")
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    "ID"                        VARCHAR(10)   NOT NULL,
    "MEMBER_ID"                 VARCHAR(165)  NOT NULL,
    "HEART_BEAT"                TIMESTAMP     NOT NULL,
    "SWITCH_MEMBER_ID"          VARCHAR(165)  NULL,
    "SWITCH_HEART_BEAT"         TIMESTAMP     NULL,
    "NOTIFICATION_MEMBER_ID"    VARCHAR(165)  NULL,
    "NOTIFICATION"              VARCHAR(100)  NULL,
    CONSTRAINT UNIQUE_JC_MID UNIQUE ("MEMBER_ID"),
    PRIMARY KEY ("ID")
)"#,
    // The tables JOC's cluster service reads besides its own (docs/joc-facts.md fact 5):
    // columns from SOS's entities `sos-joc/sos-joc-db/src/main/java/com/sos/joc/db/
    // inventory/DBItemInventoryOperatingSystem.java`, `.../joc/DBItemJocConfiguration.java`
    // and `.../inventory/DBItemInventoryJSInstance.java` (names, nullability, unique
    // keys, sequences from `DBLayer.java`), only those the stand-in reads or must
    // fill; the column types are ours (SOS's SQL scripts ship with the installer,
    // not in that repository).
    "CREATE SEQUENCE IF NOT EXISTS SEQ_INV_OS INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    "ID"             BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_INV_OS'),
    "HOSTNAME"       VARCHAR(100)  NOT NULL,
    "NAME"           VARCHAR(30)   NOT NULL,
    "ARCHITECTURE"   VARCHAR(30)   NOT NULL,
    "DISTRIBUTION"   VARCHAR(255)  NOT NULL,
    "MODIFIED"       TIMESTAMP     NOT NULL,
    CONSTRAINT UNIQUE_IOS_HN UNIQUE ("HOSTNAME"),
    PRIMARY KEY ("ID")
)"#,
    "CREATE SEQUENCE IF NOT EXISTS SEQ_JOC_C INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    "ID"                  BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_JOC_C'),
    "INSTANCE_ID"         BIGINT        NOT NULL,
    "CONTROLLER_ID"       VARCHAR(100)  NULL,
    "ACCOUNT"             VARCHAR(255)  NOT NULL,
    "OBJECT_TYPE"         VARCHAR(30)   NOT NULL,
    "CONFIGURATION_TYPE"  VARCHAR(30)   NOT NULL,
    "NAME"                VARCHAR(255)  NULL,
    "SHARED"              NUMERIC(1)    NOT NULL,
    "CONFIGURATION_ITEM"  TEXT          NOT NULL,
    "MODIFIED"            TIMESTAMP     NOT NULL,
    PRIMARY KEY ("ID")
)"#,
    "CREATE SEQUENCE IF NOT EXISTS SEQ_INV_JI INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    "ID"             BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_INV_JI'),
    "CONTROLLER_ID"  VARCHAR(100)  NOT NULL,
    "SECURITY_LEVEL" SMALLINT      NOT NULL,
    "URI"            VARCHAR(255)  NOT NULL,
    "CLUSTER_URI"    VARCHAR(255)  NOT NULL,
    "OS_ID"          BIGINT        NOT NULL,
    "IS_CLUSTER"     NUMERIC(1)    NOT NULL,
    "IS_PRIMARY"     NUMERIC(1)    NOT NULL,
    "MODIFIED"       TIMESTAMP     NOT NULL,
    CONSTRAINT UNIQUE_IJI_SLU UNIQUE ("SECURITY_LEVEL", "URI"),
    PRIMARY KEY ("ID")
)"#,
];

/// MySQL/MariaDB DDL: OURS. SOS's MySQL script was NOT FOUND; this is the
/// PostgreSQL script translated: TIMESTAMP → DATETIME (whole seconds, as JOC's
/// times are compared in whole seconds; DATETIME has no time zone conversion,
/// unlike MySQL's TIMESTAMP), the sequence → AUTO_INCREMENT, NUMERIC(1) → TINYINT.
const MYSQL_DDL: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    `ID`                    BIGINT        NOT NULL AUTO_INCREMENT,
    `CLUSTER_ID`            VARCHAR(10)   NOT NULL,
    `MEMBER_ID`             VARCHAR(165)  NOT NULL,
    `OS_ID`                 BIGINT        NOT NULL,
    `DATA_DIRECTORY`        VARCHAR(255)  NOT NULL,
    `SECURITY_LEVEL`        VARCHAR(10)   NOT NULL,
    `TIMEZONE`              VARCHAR(30)   NOT NULL,
    `STARTED_AT`            DATETIME      NOT NULL,
    `TITLE`                 VARCHAR(30)   NULL,
    `ORDERING`              SMALLINT      NOT NULL DEFAULT 0,
    `URI`                   VARCHAR(255)  NULL,
    `HEART_BEAT`            DATETIME      NOT NULL,
    `API_SERVER`            TINYINT       NOT NULL,
    `VERSION`               VARCHAR(30)   NULL,
    `CERTIFICATE`           VARCHAR(4000) NULL,
    CONSTRAINT UNIQUE_JI_MID UNIQUE (`MEMBER_ID`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    `ID`                        VARCHAR(10)   NOT NULL,
    `MEMBER_ID`                 VARCHAR(165)  NOT NULL,
    `HEART_BEAT`                DATETIME      NOT NULL,
    `SWITCH_MEMBER_ID`          VARCHAR(165)  NULL,
    `SWITCH_HEART_BEAT`         DATETIME      NULL,
    `NOTIFICATION_MEMBER_ID`    VARCHAR(165)  NULL,
    `NOTIFICATION`              VARCHAR(100)  NULL,
    CONSTRAINT UNIQUE_JC_MID UNIQUE (`MEMBER_ID`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    // INV_OPERATING_SYSTEMS, JOC_CONFIGURATIONS, INV_JS_INSTANCES: see POSTGRES_DDL.
    "CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    `ID`             BIGINT        NOT NULL AUTO_INCREMENT,
    `HOSTNAME`       VARCHAR(100)  NOT NULL,
    `NAME`           VARCHAR(30)   NOT NULL,
    `ARCHITECTURE`   VARCHAR(30)   NOT NULL,
    `DISTRIBUTION`   VARCHAR(255)  NOT NULL,
    `MODIFIED`       DATETIME      NOT NULL,
    CONSTRAINT UNIQUE_IOS_HN UNIQUE (`HOSTNAME`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    `ID`                  BIGINT        NOT NULL AUTO_INCREMENT,
    `INSTANCE_ID`         BIGINT        NOT NULL,
    `CONTROLLER_ID`       VARCHAR(100)  NULL,
    `ACCOUNT`             VARCHAR(255)  NOT NULL,
    `OBJECT_TYPE`         VARCHAR(30)   NOT NULL,
    `CONFIGURATION_TYPE`  VARCHAR(30)   NOT NULL,
    `NAME`                VARCHAR(255)  NULL,
    `SHARED`              TINYINT       NOT NULL,
    `CONFIGURATION_ITEM`  LONGTEXT      NOT NULL,
    `MODIFIED`            DATETIME      NOT NULL,
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    `ID`             BIGINT        NOT NULL AUTO_INCREMENT,
    `CONTROLLER_ID`  VARCHAR(100)  NOT NULL,
    `SECURITY_LEVEL` SMALLINT      NOT NULL,
    `URI`            VARCHAR(255)  NOT NULL,
    `CLUSTER_URI`    VARCHAR(255)  NOT NULL,
    `OS_ID`          BIGINT        NOT NULL,
    `IS_CLUSTER`     TINYINT       NOT NULL,
    `IS_PRIMARY`     TINYINT       NOT NULL,
    `MODIFIED`       DATETIME      NOT NULL,
    CONSTRAINT UNIQUE_IJI_SLU UNIQUE (`SECURITY_LEVEL`, `URI`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
];

/// SQLite DDL for the single-host demo: OURS (JOC has no SQLite support; H2
/// is its evaluation database). Times are TEXT 'YYYY-MM-DD HH:MM:SS' in UTC.
const SQLITE_DDL: [&str; 5] = [
    r#"CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "CLUSTER_ID"     VARCHAR(10)   NOT NULL,
    "MEMBER_ID"      VARCHAR(165)  NOT NULL UNIQUE,
    "OS_ID"          BIGINT        NOT NULL,
    "DATA_DIRECTORY" VARCHAR(255)  NOT NULL,
    "SECURITY_LEVEL" VARCHAR(10)   NOT NULL,
    "TIMEZONE"       VARCHAR(30)   NOT NULL,
    "STARTED_AT"     TEXT          NOT NULL,
    "TITLE"          VARCHAR(30)   NULL,
    "ORDERING"       SMALLINT      NOT NULL DEFAULT 0,
    "URI"            VARCHAR(255)  NULL,
    "HEART_BEAT"     TEXT          NOT NULL,
    "API_SERVER"     NUMERIC(1)    NOT NULL,
    "VERSION"        VARCHAR(30)   NULL,
    "CERTIFICATE"    VARCHAR(4000) NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    "ID"                     VARCHAR(10)  NOT NULL PRIMARY KEY,
    "MEMBER_ID"              VARCHAR(165) NOT NULL UNIQUE,
    "HEART_BEAT"             TEXT         NOT NULL,
    "SWITCH_MEMBER_ID"       VARCHAR(165) NULL,
    "SWITCH_HEART_BEAT"      TEXT         NULL,
    "NOTIFICATION_MEMBER_ID" VARCHAR(165) NULL,
    "NOTIFICATION"           VARCHAR(100) NULL
)"#,
    // INV_OPERATING_SYSTEMS, JOC_CONFIGURATIONS, INV_JS_INSTANCES: see POSTGRES_DDL.
    r#"CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "HOSTNAME"       VARCHAR(100)  NOT NULL UNIQUE,
    "NAME"           VARCHAR(30)   NOT NULL,
    "ARCHITECTURE"   VARCHAR(30)   NOT NULL,
    "DISTRIBUTION"   VARCHAR(255)  NOT NULL,
    "MODIFIED"       TEXT          NOT NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    "ID"                  INTEGER PRIMARY KEY AUTOINCREMENT,
    "INSTANCE_ID"         BIGINT        NOT NULL,
    "CONTROLLER_ID"       VARCHAR(100)  NULL,
    "ACCOUNT"             VARCHAR(255)  NOT NULL,
    "OBJECT_TYPE"         VARCHAR(30)   NOT NULL,
    "CONFIGURATION_TYPE"  VARCHAR(30)   NOT NULL,
    "NAME"                VARCHAR(255)  NULL,
    "SHARED"              NUMERIC(1)    NOT NULL,
    "CONFIGURATION_ITEM"  TEXT          NOT NULL,
    "MODIFIED"            TEXT          NOT NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "CONTROLLER_ID"  VARCHAR(100)  NOT NULL,
    "SECURITY_LEVEL" SMALLINT      NOT NULL,
    "URI"            VARCHAR(255)  NOT NULL,
    "CLUSTER_URI"    VARCHAR(255)  NOT NULL,
    "OS_ID"          BIGINT        NOT NULL,
    "IS_CLUSTER"     NUMERIC(1)    NOT NULL,
    "IS_PRIMARY"     NUMERIC(1)    NOT NULL,
    "MODIFIED"       TEXT          NOT NULL,
    UNIQUE ("SECURITY_LEVEL", "URI")
)"#,
];

/// The DDL statements for a dialect.
pub fn ddl(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Postgres => POSTGRES_DDL.to_vec(),
        Dialect::MySql => MYSQL_DDL.to_vec(),
        Dialect::Sqlite => SQLITE_DDL.to_vec(),
    }
}

/// Writes `sql` (double-quoted identifiers, `?` binds) in the dialect's form.
pub(super) fn sql(d: Dialect, s: &str) -> String {
    match d {
        Dialect::Postgres => {
            let mut out = String::with_capacity(s.len() + 8);
            let mut n = 0;
            for c in s.chars() {
                if c == '?' {
                    n += 1;
                    out.push_str(&format!("${n}"));
                } else {
                    out.push(c);
                }
            }
            out
        }
        Dialect::MySql => s.replace('"', "`"),
        Dialect::Sqlite => s.to_owned(),
    }
}

/// The database's UTC "now" (`SOSHibernateFactory`: PGSQL `select timezone('UTC', now())`,
/// MYSQL `select utc_timestamp()`; SQLite ours).
pub(super) fn now_utc(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "timezone('UTC', now())",
        Dialect::MySql => "UTC_TIMESTAMP()",
        Dialect::Sqlite => "strftime('%Y-%m-%d %H:%M:%S','now')",
    }
}

/// Whole seconds since the epoch of a UTC timestamp expression, floored like
/// `Date.getTime() / 1_000` in `JocCluster.isHeartBeatExceeded`.
pub(super) fn epoch(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Postgres => format!("CAST(FLOOR(EXTRACT(EPOCH FROM {expr})) AS BIGINT)"),
        Dialect::MySql => format!("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {expr})"),
        Dialect::Sqlite => format!("CAST(strftime('%s', {expr}) AS INTEGER)"),
    }
}

/// A UTC timestamp from a bound epoch-seconds value (NULL stays NULL).
pub(super) fn from_epoch(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "(to_timestamp(CAST(? AS DOUBLE PRECISION)) AT TIME ZONE 'UTC')",
        Dialect::MySql => "TIMESTAMPADD(SECOND, ?, '1970-01-01 00:00:00')",
        Dialect::Sqlite => "datetime(?, 'unixepoch')",
    }
}

pub(super) fn int(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Postgres => format!("CAST({expr} AS BIGINT)"),
        Dialect::MySql => format!("CAST({expr} AS SIGNED)"),
        Dialect::Sqlite => format!("CAST({expr} AS INTEGER)"),
    }
}

/// `JocCluster.isHeartBeatExceeded(now, heartBeat)` (newest): whole seconds,
/// strictly greater than the interval; a missing time counts as exceeded.
pub fn is_heart_beat_exceeded(now_s: i64, heart_beat_s: Option<i64>, interval_s: u64) -> bool {
    match heart_beat_s {
        None => true,
        Some(hb) => now_s - hb > interval_s as i64,
    }
}

/// Connects; SQLite gets a busy timeout so that several stand-ins can share a file.
pub use crate::history::connect;

/// Creates JOC's tables (JOC_INSTANCES, JOC_CLUSTER and the three the cluster
/// service reads) if missing, as JOC's `DbInstaller` does with
/// `create_db_tables = true`. Idempotent; safe when several stand-ins start at
/// once (PostgreSQL serialises on an advisory lock, since concurrent
/// `CREATE … IF NOT EXISTS` can collide there).
pub async fn create_schema(url: &str) -> Result<()> {
    run_ddl(url, |_| true).await
}

async fn run_ddl(url: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
    let dialect = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let mut tx = conn.begin().await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7297631142)")
            .execute(&mut *tx)
            .await?;
    }
    for statement in ddl(dialect).into_iter().filter(|s| keep(s)) {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .context("creating JOC's tables")?;
    }
    tx.commit().await?;
    Ok(())
}

/// Registers a Controller the way JOC's GUI does at the first login (an
/// `INV_JS_INSTANCES` row, `DBItemInventoryJSInstance`): after it JOC's
/// active member stops waiting in `readCurrentDbInfos` (docs/joc-facts.md fact 9). For
/// tests; creates INV_JS_INSTANCES if it is missing (JOC would have created it
/// at its first start) and nothing else.
pub async fn register_controller(
    url: &str,
    controller_id: &str,
    controller_uri: &str,
    security_level: SecurityLevel,
) -> Result<()> {
    run_ddl(url, |s| {
        s.contains("INV_JS_INSTANCES") || s.contains("SEQ_INV_JI")
    })
    .await?;
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO INV_JS_INSTANCES ("CONTROLLER_ID", "SECURITY_LEVEL", "URI", "CLUSTER_URI", "OS_ID", "IS_CLUSTER", "IS_PRIMARY", "MODIFIED") VALUES (?, ?, ?, ?, 0, 0, 1, {})"#,
            now_utc(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(controller_id)
        .bind(security_level.int_value())
        .bind(controller_uri)
        .bind(controller_uri)
        .execute(&mut conn)
        .await
        .context("inserting the INV_JS_INSTANCES row")?;
    Ok(())
}

/// `readCurrentDbInfoControllers` in `sos-joc/sos-joc-cluster/.../cluster/JocCluster.java`:
/// the Controllers of JOC's security level (`where securityLevel = :level`).
pub(super) async fn count_controllers(
    conn: &mut AnyConnection,
    d: Dialect,
    level: SecurityLevel,
) -> Result<i64> {
    let q = sql(
        d,
        r#"SELECT COUNT(*) FROM INV_JS_INSTANCES WHERE "SECURITY_LEVEL" = ?"#,
    );
    sqlx::query_scalar(AssertSqlSafe(q))
        .bind(level.int_value())
        .fetch_one(&mut *conn)
        .await
        .context("reading INV_JS_INSTANCES")
}
