//! The stand-in's history writes are fenced by the lease term: once a newer
//! term has written, an older one is refused, and no event is lost or
//! copied twice — on every backend.

use joc_ha_tests::db::{Backend, TestDb};
use joc_ha_tests::history::{self, Dialect, Step};

async fn stale_terms_are_fenced(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dialect = Dialect::of_url(&url)?;
    history::create_schema(&url).await?;
    let mut controller = history::connect(&url).await?;
    let mut old = history::connect(&url).await?;
    let mut new = history::connect(&url).await?;

    for id in 1..=10 {
        history::append_event(&mut controller, dialect, id).await?;
    }
    assert_eq!(
        history::copy_new_events(&mut old, dialect, "joc-0", 1, 4).await?,
        Step::Copied(4)
    );
    assert_eq!(
        history::copy_new_events(&mut new, dialect, "joc-1", 2, 4).await?,
        Step::Copied(4)
    );
    // The old holder still believes it is active: the database refuses it.
    assert_eq!(
        history::copy_new_events(&mut old, dialect, "joc-0", 1, 4).await?,
        Step::Fenced
    );
    assert_eq!(
        history::copy_new_events(&mut new, dialect, "joc-1", 2, 4).await?,
        Step::Copied(2)
    );
    assert_eq!(
        history::copy_new_events(&mut new, dialect, "joc-1", 2, 4).await?,
        Step::Idle
    );

    let report = history::check(&mut controller).await?;
    assert_eq!(report.events, 10);
    assert_eq!(report.lost, 0, "{}: lost events", backend.name());
    assert_eq!(
        report.duplicates,
        0,
        "{}: duplicated events",
        backend.name()
    );
    assert_eq!(history::cursor(&mut controller).await?, 10);
    Ok(())
}

#[tokio::test]
async fn postgres_fences_stale_terms() -> anyhow::Result<()> {
    stale_terms_are_fenced(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_fences_stale_terms() -> anyhow::Result<()> {
    stale_terms_are_fenced(Backend::MariaDb).await
}

#[tokio::test]
async fn sqlite_fences_stale_terms() -> anyhow::Result<()> {
    stale_terms_are_fenced(Backend::Sqlite).await
}

#[tokio::test]
async fn the_checker_sees_loss_and_duplicates() -> anyhow::Result<()> {
    let db = TestDb::start(Backend::Sqlite).await?;
    let url = db.url();
    history::create_schema(&url).await?;
    let mut conn = history::connect(&url).await?;
    for id in 1..=3 {
        history::append_event(&mut conn, Dialect::Sqlite, id).await?;
    }
    // Event 1 twice, event 3 never: the checker must say so.
    for id in [1, 1, 2] {
        sqlx::query("INSERT INTO standin_history (event_id, member, term) VALUES (?, 'x', 1)")
            .bind(id as i64)
            .execute(&mut conn)
            .await?;
    }
    let report = history::check(&mut conn).await?;
    assert_eq!(report.lost, 1);
    assert_eq!(report.duplicates, 1);
    Ok(())
}
