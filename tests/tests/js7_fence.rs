//! Fencing a JOC (README "Fencing"): the writes the sidecar makes after it
//! confirmed a fenced JVM gone, against real PostgreSQL and MariaDB; the
//! stand-in's JVM as its own process in the container's process group.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use joc_ha_sidecar::js7::{FencedRelease, JocTables};
use joc_ha_sidecar::lease::DatabaseUrl;
use joc_ha_tests::db::{Backend, TestDb};
use joc_ha_tests::joc;
use sqlx::{AnyPool, AssertSqlSafe};

/// Inserts a JOC_INSTANCES row for `member` with a heartbeat of now (the
/// columns JOC's DDL requires; values as a JOC would write them).
async fn insert_instance(
    pool: &AnyPool,
    backend: Backend,
    member: &str,
    ordering: i64,
) -> Result<()> {
    let now = match backend {
        Backend::Postgres => "timezone('UTC', now())",
        _ => "UTC_TIMESTAMP()",
    };
    let sql = format!(
        "INSERT INTO JOC_INSTANCES (CLUSTER_ID, MEMBER_ID, OS_ID, DATA_DIRECTORY, SECURITY_LEVEL, TIMEZONE, STARTED_AT, ORDERING, HEART_BEAT, API_SERVER) \
         VALUES ('joc', '{member}', 0, '/var/sos-berlin.com/js7/joc', 'LOW', 'UTC', {now}, {ordering}, {now}, 0)"
    );
    sqlx::query(AssertSqlSafe(quote(backend, &sql)))
        .execute(pool)
        .await
        .with_context(|| format!("inserting the instance {member}"))?;
    Ok(())
}

/// JOC's PostgreSQL DDL quotes its upper-case column names.
fn quote(backend: Backend, sql: &str) -> String {
    if backend != Backend::Postgres {
        return sql.to_owned();
    }
    let mut out = sql.to_owned();
    for col in [
        "CLUSTER_ID",
        "SWITCH_MEMBER_ID",
        "SWITCH_HEART_BEAT",
        "MEMBER_ID",
        "OS_ID",
        "DATA_DIRECTORY",
        "SECURITY_LEVEL",
        "TIMEZONE",
        "STARTED_AT",
        "ORDERING",
        "HEART_BEAT",
        "API_SERVER",
    ] {
        out = out.replace(&format!(" {col}"), &format!(" \"{col}\""));
        out = out.replace(&format!("({col}"), &format!("(\"{col}\""));
        out = out.replace(&format!(",{col}"), &format!(",\"{col}\""));
    }
    out.replace(" ID ", " \"ID\" ").replace("(ID,", "(\"ID\",")
}

async fn set_cluster_row(
    pool: &AnyPool,
    backend: Backend,
    member: &str,
    switch_to: Option<&str>,
) -> Result<()> {
    let now = match backend {
        Backend::Postgres => "timezone('UTC', now())",
        _ => "UTC_TIMESTAMP()",
    };
    sqlx::query("DELETE FROM JOC_CLUSTER").execute(pool).await?;
    let (switch, switch_hb) = match switch_to {
        Some(t) => (format!("'{t}'"), now.to_owned()),
        None => ("NULL".to_owned(), "NULL".to_owned()),
    };
    let sql = format!(
        "INSERT INTO JOC_CLUSTER (ID, MEMBER_ID, HEART_BEAT, SWITCH_MEMBER_ID, SWITCH_HEART_BEAT) VALUES ('cluster', '{member}', {now}, {switch}, {switch_hb})"
    );
    sqlx::query(AssertSqlSafe(quote(backend, &sql)))
        .execute(pool)
        .await
        .context("writing the JOC_CLUSTER row")?;
    Ok(())
}

/// The two instances every test here starts from.
const A: &str = "joc-0:aaaa";
const B: &str = "joc-1:bbbb";

/// A database with JOC's schema and two fresh instances, [`A`] and [`B`];
/// the database lives as long as the returned [`TestDb`].
async fn two_instances(backend: Backend) -> Result<(TestDb, String, AnyPool, JocTables)> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    joc::create_schema(&url).await?;
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await?;
    insert_instance(&pool, backend, A, 0).await?;
    insert_instance(&pool, backend, B, 1).await?;
    let tables = JocTables::new(&DatabaseUrl::parse(&url)?, Duration::from_secs(5));
    Ok((db, url, pool, tables))
}

/// docs/joc-facts.md fact 12, done by the sidecar for a fenced JVM: the
/// instance heartbeat goes to 1970-01-01; the cluster row goes only if it
/// names the fenced member and no switch is pending; nothing else changes.
async fn a_fenced_member_is_released_like_a_clean_shutdown(backend: Backend) -> Result<()> {
    let (_db, url, pool, tables) = two_instances(backend).await?;
    let (a, b) = (A, B);

    // JOC_CLUSTER names the fenced member, no switch pending: deleted.
    set_cluster_row(&pool, backend, a, None).await?;
    let released = tables.release_fenced_member(a).await?;
    assert_eq!(
        released,
        FencedRelease {
            cluster_row_deleted: true,
            heartbeat_reset: true
        }
    );
    assert!(
        joc::cluster_row(&url).await?.is_none(),
        "the row is deleted"
    );
    let instances = joc::instances(&url).await?;
    let of = |id: &str| instances.iter().find(|i| i.member_id == id).cloned();
    let fenced = of(a).context("the fenced instance's row")?;
    let other = of(b).context("the other instance's row")?;
    assert_eq!(fenced.heart_beat, 0, "1970-01-01 00:00:00 UTC");
    assert!(!fenced.is_fresh(5), "stale at once: {fenced:?}");
    assert!(
        other.is_fresh(5),
        "the other instance is untouched: {other:?}"
    );
    let view = tables.read().await?;
    assert!(!view.is_ready_member(a));
    assert!(view.is_ready_member(b));

    // A switch is pending: the row stays (JOC's own rule), the heartbeat goes.
    set_cluster_row(&pool, backend, a, Some(b)).await?;
    let released = tables.release_fenced_member(a).await?;
    assert!(
        !released.cluster_row_deleted && released.heartbeat_reset,
        "{released:?}"
    );
    let row = joc::cluster_row(&url).await?.context("the row stays")?;
    ensure!(row.member_id == a, "{row:?}");

    // The row names another member: it stays.
    set_cluster_row(&pool, backend, b, None).await?;
    let released = tables.release_fenced_member(a).await?;
    assert!(!released.cluster_row_deleted, "{released:?}");
    assert_eq!(
        joc::cluster_row(&url)
            .await?
            .map(|r| r.member_id)
            .as_deref(),
        Some(b)
    );

    // An unknown member changes nothing.
    let released = tables.release_fenced_member("joc-9:none").await?;
    assert_eq!(
        released,
        FencedRelease {
            cluster_row_deleted: false,
            heartbeat_reset: false
        }
    );
    let other = joc::instances(&url)
        .await?
        .into_iter()
        .find(|i| i.member_id == b)
        .context("row")?;
    assert!(other.is_fresh(5), "{other:?}");
    Ok(())
}

/// README "When Kubernetes knows the active JOC is gone": the row of a JOC
/// whose container ran anew goes to the holder's JOC (heartbeat exceeded at
/// once, a switch request to it) or is deleted; never once a new JVM of
/// that member registered, never when it names another member.
async fn a_gone_active_row_is_handed_on_or_released(backend: Backend) -> Result<()> {
    let (_db, url, pool, tables) = two_instances(backend).await?;
    let (a, b) = (A, B);
    let started_at = tables
        .read()
        .await?
        .instance(a)
        .and_then(|i| i.stamp.started_at.clone())
        .context("STARTED_AT of the gone member")?;

    // Handed on: exceeded at once, a fresh request names the successor.
    set_cluster_row(&pool, backend, a, None).await?;
    assert!(tables.release_gone_active(a, &started_at, Some(b)).await?);
    let row = joc::cluster_row(&url).await?.context("the row stays")?;
    assert_eq!(row.member_id, a, "MEMBER_ID is JOC's to move: {row:?}");
    assert_eq!(row.heart_beat, 0, "1970-01-01: exceeded at once: {row:?}");
    assert_eq!(row.switch_member_id.as_deref(), Some(b), "{row:?}");
    let asked = row.switch_heart_beat.context("SWITCH_HEART_BEAT")?;
    assert!(row.db_now - asked <= 1, "a fresh request: {row:?}");
    let view = tables.read().await?;
    assert!(view.switch_pending_to(b), "JOC would execute it: {view:?}");

    // Released: deleted.
    set_cluster_row(&pool, backend, a, None).await?;
    assert!(tables.release_gone_active(a, &started_at, None).await?);
    assert!(joc::cluster_row(&url).await?.is_none(), "deleted");

    // A new JVM of the member registered (another STARTED_AT), or the row
    // names another member: nothing changes, with or without a successor.
    set_cluster_row(&pool, backend, a, None).await?;
    for successor in [Some(b), None] {
        assert!(
            !tables
                .release_gone_active(a, "1999-01-01 00:00:00", successor)
                .await?
        );
    }
    set_cluster_row(&pool, backend, b, None).await?;
    for successor in [Some(a), None] {
        assert!(
            !tables
                .release_gone_active(a, &started_at, successor)
                .await?
        );
    }
    let row = joc::cluster_row(&url).await?.context("the row")?;
    ensure!(
        row.member_id == b && row.switch_member_id.is_none() && row.db_now - row.heart_beat <= 1,
        "untouched: {row:?}"
    );
    Ok(())
}

/// A JOC frozen inside its transaction keeps its row lock on JOC_CLUSTER
/// (a bench-js7 run saw the sidecar's switch request wait 61 s behind one,
/// its main loop held all that time): a write gives up within its bound
/// and says why; reads are not blocked; once the lock goes, writes work.
async fn a_locked_row_bounds_the_write_instead_of_holding_the_sidecar(
    backend: Backend,
) -> Result<()> {
    let (_db, _url, pool, tables) = two_instances(backend).await?;
    let (a, b) = (A, B);
    set_cluster_row(&pool, backend, a, None).await?;
    // Another session (the frozen JOC) holds the row.
    let mut frozen = pool.begin().await?;
    let lock = quote(
        backend,
        "SELECT MEMBER_ID FROM JOC_CLUSTER WHERE ID = 'cluster' FOR UPDATE",
    );
    sqlx::query(AssertSqlSafe(lock))
        .fetch_all(&mut *frozen)
        .await?;

    let started = std::time::Instant::now();
    let error = tables
        .request_switch(a, b)
        .await
        .expect_err("the row is locked");
    let took = started.elapsed();
    println!("{backend:?}: the write gave up after {took:?}: {error}");
    assert!(
        error.to_string().contains("is locked by another session"),
        "{error}"
    );
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    let view = tables.read().await?;
    assert_eq!(view.active_member(), Some(a), "reads are not blocked");

    frozen.rollback().await?;
    assert!(
        tables.request_switch(a, b).await?,
        "the lock gone, the write lands"
    );
    assert!(tables.read().await?.switch_pending_to(b));
    Ok(())
}

macro_rules! on_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(joc_ha_tests::db::Backend::Postgres).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(joc_ha_tests::db::Backend::MariaDb).await
                }
            )*
        }
    };
}

on_backends!(
    a_locked_row_bounds_the_write_instead_of_holding_the_sidecar,
    a_fenced_member_is_released_like_a_clean_shutdown,
    a_gone_active_row_is_handed_on_or_released
);
