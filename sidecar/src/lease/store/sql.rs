//! The plumbing the three products share, written once: statements as data
//! (SQL text plus the order of its parameters), binding, running with the
//! statement counter and time limit, decoding the lease and member rows,
//! migrations and the schema check. The product modules hold only their SQL
//! and what really differs (sessions, locks, waiters).

use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Arguments as _, Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::{CONNECT_TIMEOUT, Ctx, LeaseView, MemberRow, member_row};
use crate::lease::error::LeaseError;

/// How long applying the migrations may take.
pub(crate) const MIGRATE_TIMEOUT: Duration = Duration::from_secs(CONNECT_TIMEOUT.as_secs() * 3);

/// A parameter of a lease statement. Each product lists them in the order
/// its SQL expects (MySQL's `?` cannot be numbered, so it repeats some).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    Cluster,
    Member,
    /// This member's kind (`joc_ha_member.kind`).
    Kind,
    Ready,
    /// This session's key.
    Key,
    /// The lease term the statement is conditional on.
    Term,
    /// The hand-over target.
    Target,
    /// The key of the holder whose session was seen ending.
    HolderKey,
    TtlMs,
    FreshMs,
    /// The same in microseconds (MySQL's `INTERVAL ? MICROSECOND`).
    TtlUs,
    FreshUs,
    StealAfterUs,
    /// MySQL: the name of this session's lock.
    Lock,
    /// SQLite: the boot id that tags monotonic times.
    Boot,
    /// SQLite: the host's monotonic clock, read right before the statement.
    Now,
}

/// One statement: what it is called in errors, its SQL, its parameters.
#[derive(Debug)]
pub(crate) struct Stmt {
    pub op: &'static str,
    pub sql: &'static str,
    pub params: &'static [Param],
}

impl Stmt {
    pub(crate) const fn new(op: &'static str, sql: &'static str, params: &'static [Param]) -> Stmt {
        Stmt { op, sql, params }
    }
}

/// A bound value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Bool(bool),
}

/// The values that change from call to call (the rest come from the
/// session's [`Ctx`] and the store).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Args<'a> {
    pub ready: bool,
    pub term: i64,
    pub target: &'a str,
    pub holder_key: i64,
    /// Overrides `Ctx::steal_after_ms` (a take-over Kubernetes confirmed).
    pub steal_after_ms: Option<i64>,
}

/// The answer of an `UPDATE`/`INSERT`: how many rows it changed.
pub(crate) trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A product whose statements take our three kinds of [`Value`]: the
/// bounds that say so, written once.
pub(crate) trait Bind: Database {
    type Args: IntoArguments<Self> + Send + 'static;

    /// The argument list of a statement.
    fn arguments(values: &[Value<'_>]) -> Result<Self::Args, sqlx::Error>;
}

impl<DB> Bind for DB
where
    DB: Database,
    DB::Arguments: IntoArguments<DB> + 'static,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
{
    type Args = DB::Arguments;

    fn arguments(values: &[Value<'_>]) -> Result<DB::Arguments, sqlx::Error> {
        let mut arguments = DB::Arguments::default();
        for value in values {
            match *value {
                Value::Text(text) => arguments.add(text),
                Value::Int(number) => arguments.add(number),
                Value::Bool(flag) => arguments.add(flag),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(arguments)
    }
}

/// Runs `stmt` (no rows expected) and returns how many rows it changed.
pub(crate) async fn execute<'c, DB, E>(
    ctx: &Ctx,
    stmt: &Stmt,
    timeout: Duration,
    values: &[Value<'_>],
    conn: E,
) -> Result<u64, LeaseError>
where
    DB: Bind,
    DB::QueryResult: Affected,
    E: Executor<'c, Database = DB>,
{
    let arguments = DB::arguments(values).map_err(|error| ctx.classify(stmt.op, &error))?;
    let done = ctx
        .run(
            stmt.op,
            timeout,
            sqlx::query_with(stmt.sql, arguments).execute(conn),
        )
        .await?;
    Ok(done.affected())
}

/// Runs `stmt` and decodes every row it returns as `T`.
pub(crate) async fn fetch<'c, DB, E, T>(
    ctx: &Ctx,
    stmt: &Stmt,
    timeout: Duration,
    values: &[Value<'_>],
    conn: E,
) -> Result<Vec<T>, LeaseError>
where
    DB: Bind,
    E: Executor<'c, Database = DB>,
    T: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
{
    let arguments = DB::arguments(values).map_err(|error| ctx.classify(stmt.op, &error))?;
    ctx.run(
        stmt.op,
        timeout,
        sqlx::query_as_with::<DB, T, _>(stmt.sql, arguments).fetch_all(conn),
    )
    .await
}

/// The lease columns every product selects, in this order: holder, holder's
/// session key, term, `expires_at - now` (ms), `now - renewed_at` (ms), now
/// (ms). A missing term means there is no lease row (SQLite's heartbeat).
pub(crate) type ViewRow = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

pub(crate) fn lease_view(row: ViewRow) -> Option<LeaseView> {
    let (holder, holder_session, term, expires_in_ms, renewed_age_ms, db_now_ms) = row;
    Some(LeaseView {
        holder,
        holder_session,
        term: term?,
        // Never missing for a present row; read as expired if it were.
        expires_in_ms: expires_in_ms.unwrap_or(0),
        renewed_age_ms,
        db_now_ms,
    })
}

/// The member columns every product selects: member, kind, ready,
/// heartbeat age (ms), holds the lease now (0/1), `now - renewed_at` (ms).
pub(crate) type MemberTuple = (String, String, bool, Option<i64>, i64, Option<i64>);

pub(crate) fn member_rows(ctx: &Ctx, rows: Vec<MemberTuple>) -> Vec<MemberRow> {
    rows.into_iter()
        .map(
            |(member, kind, ready, heartbeat_age_ms, holder, renewed_age_ms)| {
                member_row(
                    ctx,
                    member,
                    &kind,
                    ready,
                    heartbeat_age_ms,
                    holder != 0,
                    renewed_age_ms,
                )
            },
        )
        .collect()
}

/// The migrator of one product's folder, recording into `joc_ha_migrations`.
pub(crate) fn named(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name("joc_ha_migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// Applies the migrations within [`MIGRATE_TIMEOUT`], up to `attempts`
/// times (a retry after a short random pause: for products whose migrator
/// takes no lock and may race with another member starting at once).
pub(crate) async fn migrate<C>(
    ctx: &Ctx,
    migrator: &Migrator,
    conn: &mut C,
    attempts: u32,
) -> Result<(), LeaseError>
where
    C: Migrate + Send,
{
    let mut attempt = 1;
    loop {
        ctx.count();
        let result = tokio::time::timeout(
            MIGRATE_TIMEOUT,
            migrator.run_direct(None, &mut *conn, false),
        )
        .await
        .map_err(|_| LeaseError::Timeout {
            op: "migrate",
            target: ctx.target(),
            timeout: MIGRATE_TIMEOUT,
        })?;
        match result {
            Ok(()) => return Ok(()),
            Err(error) if attempt < attempts => {
                tracing::debug!(%attempt, error = %ctx.url.scrub(&error.to_string()),
                    "the migration raced with another process; retrying");
                let pause = 50 + rand::random::<u64>() % 200;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            Err(error) => return Err(ctx.migration_error(&error)),
        }
    }
}

/// Runs `sql` (no parameters), answering one integer.
pub(crate) async fn number<'c, DB, E>(
    ctx: &Ctx,
    op: &'static str,
    sql: &'static str,
    conn: E,
) -> Result<Option<i64>, LeaseError>
where
    DB: Bind,
    E: Executor<'c, Database = DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    let stmt = Stmt::new(op, sql, &[]);
    let rows: Vec<(i64,)> = fetch(ctx, &stmt, ctx.op_timeout, &[], conn).await?;
    Ok(rows.first().map(|row| row.0))
}

/// js7 mode: claims the database for this cluster if nobody has, then
/// fails with [`LeaseError::DatabaseInUse`] if another cluster holds it.
/// Runs before this member registers, so a refused cluster writes nothing
/// but the claim attempt (a no-op when the database is claimed).
pub(crate) async fn claim_database<DB, C>(
    ctx: &Ctx,
    claim: &Stmt,
    owner: &Stmt,
    conn: &mut C,
) -> Result<(), LeaseError>
where
    DB: Bind,
    DB::QueryResult: Affected,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
{
    if !ctx.exclusive {
        return Ok(());
    }
    let me = [Value::Text(&ctx.cluster)];
    execute(ctx, claim, ctx.op_timeout, &me, &mut *conn).await?;
    let rows: Vec<(String,)> = fetch(ctx, owner, ctx.op_timeout, &[], &mut *conn).await?;
    match rows.into_iter().next() {
        Some((owner,)) if owner != ctx.cluster => Err(LeaseError::DatabaseInUse {
            target: ctx.target(),
            owner,
            ours: ctx.cluster.clone(),
        }),
        Some(_) => Ok(()),
        None => Err(ctx.schema_missing()),
    }
}

/// Fails with [`LeaseError::SchemaMissing`] unless `count_tables` (a
/// statement answering how many of the two lease tables exist) says 2.
pub(crate) async fn check_schema<'c, DB, E>(
    ctx: &Ctx,
    count_tables: &'static str,
    conn: E,
) -> Result<(), LeaseError>
where
    DB: Bind,
    E: Executor<'c, Database = DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    if number(ctx, "check schema", count_tables, conn).await? == Some(2) {
        Ok(())
    } else {
        Err(ctx.schema_missing())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, mysql, postgres, sqlite};
    use super::*;

    fn statements(dialect: &Dialect) -> Vec<&Stmt> {
        let mut all = vec![
            &dialect.heartbeat,
            &dialect.read,
            &dialect.acquire,
            &dialect.renew,
            &dialect.release,
            &dialect.hand_over,
            &dialect.set_ready,
            &dialect.members,
            &dialect.claim,
            &dialect.owner,
        ];
        all.extend(dialect.register);
        all.extend(dialect.steal.as_ref());
        all
    }

    /// The highest numbered placeholder (`$n` or `?n`) in `sql`.
    fn highest(sql: &str, sigil: char) -> usize {
        sql.match_indices(sigil)
            .filter_map(|(at, _)| {
                let digits: String = sql[at + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_statement_binds_what_its_sql_asks_for() {
        for stmt in statements(&postgres::DIALECT) {
            assert_eq!(highest(stmt.sql, '$'), stmt.params.len(), "{}", stmt.op);
        }
        for stmt in statements(&sqlite::DIALECT) {
            assert_eq!(highest(stmt.sql, '?'), stmt.params.len(), "{}", stmt.op);
        }
        for stmt in statements(&mysql::DIALECT) {
            assert_eq!(
                stmt.sql.matches('?').count(),
                stmt.params.len(),
                "{}",
                stmt.op
            );
        }
    }

    #[test]
    fn lease_rows_decode_and_a_missing_term_means_no_row() {
        let view = lease_view((
            Some("joc-0".into()),
            Some(7),
            Some(3),
            Some(900),
            Some(100),
            5,
        ))
        .expect("a row");
        assert_eq!(
            (view.term, view.expires_in_ms, view.holder_session),
            (3, 900, Some(7))
        );
        assert!(view.is_live());
        assert_eq!(lease_view((None, None, None, None, None, 5)), None);
    }
}
