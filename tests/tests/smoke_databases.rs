//! The real database servers the tests rely on answer queries, refuse a wrong
//! password, and survive a stop/start on the same port with their data.

use joc_ha_tests::db::{Backend, TestDb};
use sqlx::{AnyConnection, Connection};

async fn answers_a_query(backend: Backend) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let db = TestDb::start(backend).await?;
    let mut conn = AnyConnection::connect(&db.url()).await?;
    let two: i32 = sqlx::query_scalar("SELECT 1 + 1")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(two, 2, "{} computed 1 + 1", backend.name());
    Ok(())
}

#[tokio::test]
async fn postgres_answers_a_query() -> anyhow::Result<()> {
    answers_a_query(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_answers_a_query() -> anyhow::Result<()> {
    answers_a_query(Backend::MariaDb).await
}

#[tokio::test]
async fn sqlite_answers_a_query() -> anyhow::Result<()> {
    answers_a_query(Backend::Sqlite).await
}

async fn refuses_a_wrong_password_and_restarts(backend: Backend) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut db = TestDb::start_private(backend).await?;
    let refused = AnyConnection::connect(&db.url_with_password("wrong")).await;
    assert!(
        refused.is_err(),
        "{} accepted a wrong password",
        backend.name()
    );

    let mut conn = AnyConnection::connect(&db.url()).await?;
    sqlx::query("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO kept (id) VALUES (7)")
        .execute(&mut conn)
        .await?;
    drop(conn);

    let server = db.server_mut().expect("private server");
    server.stop().await?;
    assert!(
        AnyConnection::connect(&db.url()).await.is_err(),
        "{} still answers after stop",
        backend.name()
    );
    db.server_mut().expect("private server").start().await?;
    let mut conn = AnyConnection::connect(&db.url()).await?;
    let kept: i32 = sqlx::query_scalar("SELECT id FROM kept")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(kept, 7, "{} kept its data across a restart", backend.name());
    Ok(())
}

#[tokio::test]
async fn postgres_refuses_a_wrong_password_and_restarts() -> anyhow::Result<()> {
    refuses_a_wrong_password_and_restarts(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_refuses_a_wrong_password_and_restarts() -> anyhow::Result<()> {
    refuses_a_wrong_password_and_restarts(Backend::MariaDb).await
}
