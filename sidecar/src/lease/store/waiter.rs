//! The waiter connection of products with session locks, behind one enum.

use sqlx::{ConnectOptions, Executor, FromRow};

use super::sql::{self, Bind, Stmt, Value};
use super::{Ctx, mysql, postgres};
use crate::lease::error::LeaseError;
use crate::lease::url::Options;

/// A waiter connection of product `DB` and the server's id for it (the
/// session connection interrupts a wait with it).
pub(crate) struct Waiting<C> {
    pub(crate) conn: C,
    pub(crate) backend_id: i64,
}

impl<C> Waiting<C> {
    /// Connects (without slow-statement warnings: waiting is this
    /// connection's job) and asks the server for this connection's id
    /// (`backend_sql`).
    pub(crate) async fn open<DB, O>(
        ctx: &Ctx,
        options: O,
        backend_sql: &'static str,
    ) -> Result<Waiting<C>, LeaseError>
    where
        DB: Bind,
        O: ConnectOptions<Connection = C>,
        for<'c> &'c mut C: Executor<'c, Database = DB>,
        (i64,): for<'r> FromRow<'r, DB::Row>,
    {
        let options = options.disable_statement_logging();
        let mut conn = ctx.open(options.connect()).await?;
        let backend_id = sql::number(ctx, "backend id", backend_sql, &mut conn)
            .await?
            .unwrap_or(0);
        Ok(Waiting { conn, backend_id })
    }

    /// Runs a lock function (`sql`, one parameter) that answers 1 for yes.
    pub(crate) async fn ask<DB>(
        &mut self,
        ctx: &Ctx,
        sql: &'static str,
        value: Value<'_>,
    ) -> Result<bool, LeaseError>
    where
        DB: Bind,
        for<'c> &'c mut C: Executor<'c, Database = DB>,
        (i64,): for<'r> FromRow<'r, DB::Row>,
    {
        let stmt = Stmt::new("watch holder", sql, &[]);
        let rows: Vec<(i64,)> =
            sql::fetch(ctx, &stmt, ctx.op_timeout, &[value], &mut self.conn).await?;
        Ok(rows.first().map(|row| row.0) == Some(1))
    }
}

/// The outcome of a blocking wait for a session lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockWait {
    Acquired,
    TimedOut,
    Canceled,
}

/// The second connection of a member on products with session locks:
/// blocks on the holder's session lock to learn at once when that session
/// ends.
pub(crate) enum WaiterConn {
    Postgres(postgres::PgWaiter),
    MySql(mysql::MySqlWaiter),
}

impl WaiterConn {
    pub(crate) async fn connect(ctx: &Ctx) -> Result<WaiterConn, LeaseError> {
        match &ctx.url.options {
            Options::Postgres(options) => Ok(WaiterConn::Postgres(
                postgres::PgWaiter::open(
                    ctx,
                    postgres::waiter_options(options),
                    postgres::BACKEND_ID,
                )
                .await?,
            )),
            Options::MySql(options) => Ok(WaiterConn::MySql(
                mysql::MySqlWaiter::open(ctx, options.clone(), mysql::BACKEND_ID).await?,
            )),
            Options::Sqlite(_) => Err(LeaseError::Database {
                op: "waiter",
                target: ctx.target(),
                detail: "SQLite has no session locks".to_owned(),
            }),
        }
    }

    /// The server's id of this connection (PostgreSQL pid, MySQL connection id).
    pub(crate) fn backend_id(&self) -> i64 {
        match self {
            WaiterConn::Postgres(w) => w.backend_id,
            WaiterConn::MySql(w) => w.backend_id,
        }
    }

    pub(crate) async fn try_lock(&mut self, ctx: &Ctx, key: i64) -> Result<bool, LeaseError> {
        match self {
            WaiterConn::Postgres(w) => w.try_lock(ctx, key).await,
            WaiterConn::MySql(w) => w.try_lock(ctx, key).await,
        }
    }

    pub(crate) async fn lock(&mut self, ctx: &Ctx, key: i64) -> Result<LockWait, LeaseError> {
        match self {
            WaiterConn::Postgres(w) => w.lock(ctx, key).await,
            WaiterConn::MySql(w) => w.lock(ctx, key).await,
        }
    }

    pub(crate) async fn unlock(&mut self, ctx: &Ctx, key: i64) -> Result<(), LeaseError> {
        let released = match self {
            WaiterConn::Postgres(w) => w.unlock(ctx, key).await?,
            WaiterConn::MySql(w) => w.unlock(ctx, key).await?,
        };
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
