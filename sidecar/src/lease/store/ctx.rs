//! What every lease statement shares: names and timing, the statement
//! counter, time limits, and the mapping of sqlx errors to [`LeaseError`]s.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::CONNECT_TIMEOUT;
use crate::lease::config::{LeaseConfig, MemberKind};
use crate::lease::error::LeaseError;
use crate::lease::url::DatabaseUrl;

/// What every statement needs: names, timing in milliseconds, the URL (for
/// redacted messages) and the statement counter.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub cluster: String,
    pub member: String,
    pub kind: MemberKind,
    pub ttl_ms: i64,
    /// MariaDB/MySQL: a holder whose session lock is gone may be replaced
    /// this long after its last renew (hold + margin).
    pub steal_after_ms: i64,
    /// A member heartbeat younger than this is fresh.
    pub fresh_ms: i64,
    pub op_timeout: Duration,
    pub migrate: bool,
    pub exclusive: bool,
    pub url: DatabaseUrl,
    pub statements: Arc<AtomicU64>,
}

impl Ctx {
    pub(crate) fn new(config: &LeaseConfig, url: DatabaseUrl, statements: Arc<AtomicU64>) -> Ctx {
        Ctx {
            cluster: config.cluster_id.clone(),
            member: config.member.clone(),
            kind: config.kind,
            ttl_ms: millis(config.ttl),
            steal_after_ms: millis(config.hold() + config.margin()),
            fresh_ms: millis(config.freshness()),
            op_timeout: config.ttl.max(Duration::from_secs(2)),
            migrate: config.migrate,
            exclusive: config.exclusive,
            url,
            statements,
        }
    }

    pub(crate) fn target(&self) -> String {
        self.url.redacted().to_owned()
    }

    /// Counts one statement sent without [`Ctx::run`].
    pub(crate) fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one statement with a time limit, counting it, and hands back
    /// its own result for the caller to read (a lock wait's error codes).
    pub(crate) async fn bounded<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<Result<T, sqlx::Error>, LeaseError> {
        self.count();
        tokio::time::timeout(timeout, statement)
            .await
            .map_err(|_| LeaseError::Timeout {
                op,
                target: self.target(),
                timeout,
            })
    }

    /// Runs one statement with a time limit, counting it and turning errors
    /// into [`LeaseError`]s.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        self.bounded(op, timeout, statement)
            .await?
            .map_err(|error| self.classify(op, &error))
    }

    /// Maps an error of a statement on an open connection.
    pub(crate) fn classify(&self, op: &'static str, error: &sqlx::Error) -> LeaseError {
        let detail = self.url.scrub(&error_detail(error));
        let lost = || LeaseError::ConnectionLost {
            op,
            target: self.target(),
            detail: detail.clone(),
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => lost(),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if is_connection_code(&code) {
                    lost()
                } else if is_missing_table(&code, db.message()) {
                    LeaseError::SchemaMissing {
                        target: self.target(),
                        backend: self.url.kind().migrations_dir(),
                    }
                } else {
                    LeaseError::Database {
                        op,
                        target: self.target(),
                        detail,
                    }
                }
            }
            _ => LeaseError::Database {
                op,
                target: self.target(),
                detail,
            },
        }
    }

    /// Maps an error while opening a connection.
    pub(crate) fn classify_connect(&self, error: &sqlx::Error) -> LeaseError {
        let detail = self.url.scrub(&error_detail(error));
        let target = self.target();
        match error {
            sqlx::Error::Io(io) => LeaseError::Unreachable {
                target,
                detail: match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        "connection refused (nothing listens on that port)".to_owned()
                    }
                    _ => detail,
                },
            },
            sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
                LeaseError::Unreachable { target, detail }
            }
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    // PostgreSQL invalid_password / invalid_authorization_specification,
                    // MySQL access denied (to the server / to the database).
                    "28P01" | "28000" | "1045" | "1044" | "1698" => LeaseError::LoginRefused {
                        target,
                        user: self.url.user().to_owned(),
                        detail,
                    },
                    "3D000" | "1049" => LeaseError::DatabaseNotFound {
                        target,
                        database: self.url.database().to_owned(),
                    },
                    // The server is starting up or shutting down.
                    "57P03" | "57P01" | "1053" => LeaseError::Unreachable { target, detail },
                    // SQLite: unable to open the database file.
                    "14" => LeaseError::Unreachable {
                        target,
                        detail: format!("cannot open the database file: {detail}"),
                    },
                    _ => LeaseError::Database {
                        op: "connect",
                        target,
                        detail,
                    },
                }
            }
            sqlx::Error::Configuration(_) => LeaseError::InvalidUrl {
                url: target,
                reason: detail,
            },
            _ => LeaseError::Database {
                op: "connect",
                target,
                detail,
            },
        }
    }

    /// Opens a connection within [`CONNECT_TIMEOUT`].
    pub(crate) async fn open<T>(
        &self,
        connect: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        self.count();
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(self.classify_connect(&error)),
            Err(_) => Err(LeaseError::Unreachable {
                target: self.target(),
                detail: format!("no answer within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    pub(crate) fn migration_error(&self, error: &sqlx::migrate::MigrateError) -> LeaseError {
        if let sqlx::migrate::MigrateError::Execute(inner) = error
            && !matches!(inner, sqlx::Error::Database(_))
        {
            return self.classify("migrate", inner);
        }
        LeaseError::Migration {
            target: self.target(),
            detail: self.url.scrub(&error.to_string()),
        }
    }

    pub(crate) fn schema_missing(&self) -> LeaseError {
        LeaseError::SchemaMissing {
            target: self.target(),
            backend: self.url.kind().migrations_dir(),
        }
    }
}

fn error_detail(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn is_connection_code(code: &str) -> bool {
    // PostgreSQL class 08 (connection exception) and admin/crash shutdown;
    // MariaDB connection killed, server shutdown, lost connection.
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "1927" | "1053" | "2006" | "2013"
        )
}

fn is_missing_table(code: &str, message: &str) -> bool {
    code == "42P01" || code == "1146" || message.contains("no such table")
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
