//! Parsing the database URL into connect options, keeping the password out
//! of every text.

use std::str::FromStr;

use percent_encoding::percent_decode_str;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::error::{LeaseError, redact_url, scrub};

/// The database product behind a URL: the one type for it, the API's
/// `spec.database.type`.
pub use joc_ha_crds::v1alpha1::DatabaseKind;

#[derive(Debug, Clone)]
pub(crate) enum Options {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

/// A parsed database URL. Its `Debug` and `Display` show the redacted URL.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub(crate) options: Options,
    kind: DatabaseKind,
    redacted: String,
    user: String,
    database: String,
    /// The password as written and percent-decoded, to scrub from messages.
    pub(crate) secrets: Vec<String>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted).finish()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl DatabaseUrl {
    /// Parses `postgres://`, `postgresql://`, `mysql://`, `mariadb://` and
    /// `sqlite://` URLs. The error names the problem and shows the URL
    /// redacted.
    pub fn parse(url: &str) -> Result<DatabaseUrl, LeaseError> {
        let redacted = redact_url(url.trim());
        let url = url.trim();
        let invalid = |reason: String| LeaseError::InvalidUrl {
            url: if redacted.is_empty() {
                "\"\"".to_owned()
            } else {
                redacted.clone()
            },
            reason,
        };
        if url.is_empty() {
            return Err(invalid("the URL is empty".to_owned()));
        }
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        if scheme.eq_ignore_ascii_case("sqlite") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|error| invalid(error_reason(&error, &[])))?;
            let database = options.get_filename().display().to_string();
            return Ok(DatabaseUrl {
                options: Options::Sqlite(options),
                kind: DatabaseKind::Sqlite,
                redacted,
                user: String::new(),
                database,
                secrets: Vec::new(),
            });
        }
        let mut parsed = ::url::Url::parse(url).map_err(|error| invalid(format!("{error}")))?;
        let mut secrets = Vec::new();
        if let Some(password) = parsed.password() {
            secrets.push(password.to_owned());
            if let Ok(decoded) = percent_decode_str(password).decode_utf8() {
                secrets.push(decoded.into_owned());
            }
        }
        for (key, value) in parsed.query_pairs() {
            if key.eq_ignore_ascii_case("password") {
                secrets.push(value.into_owned());
            }
        }
        let user = percent_decode_str(parsed.username())
            .decode_utf8_lossy()
            .into_owned();
        let database = parsed.path().trim_start_matches('/').to_owned();
        let needs_host = |parsed: &::url::Url| {
            if parsed.host_str().is_none_or(str::is_empty) {
                Err(invalid(
                    "the URL names no host (write scheme://USER:PASSWORD@HOST:PORT/DATABASE)"
                        .to_owned(),
                ))
            } else {
                Ok(())
            }
        };
        let (kind, options) = match DatabaseKind::of_url(url) {
            Some(kind @ DatabaseKind::Postgresql) => {
                needs_host(&parsed)?;
                let options = Options::Postgres(
                    PgConnectOptions::from_url(&parsed)
                        .map_err(|error| invalid(error_reason(&error, &secrets)))?
                        .application_name("joc-ha-lease"),
                );
                (kind, options)
            }
            Some(kind @ (DatabaseKind::Mysql | DatabaseKind::Mariadb)) => {
                needs_host(&parsed)?;
                if parsed.scheme() != "mysql" && parsed.set_scheme("mysql").is_err() {
                    return Err(invalid("cannot use this URL as a MySQL URL".to_owned()));
                }
                let options = Options::MySql(
                    MySqlConnectOptions::from_url(&parsed)
                        .map_err(|error| invalid(error_reason(&error, &secrets)))?,
                );
                (kind, options)
            }
            Some(DatabaseKind::Sqlite) | None => {
                return Err(invalid(format!(
                    "unsupported scheme {:?}: use postgres, mysql (also for MariaDB) or sqlite",
                    parsed.scheme()
                )));
            }
        };
        if database.is_empty() {
            return Err(invalid(
                "the URL names no database (the path after the host)".to_owned(),
            ));
        }
        Ok(DatabaseUrl {
            kind,
            options,
            redacted,
            user,
            database,
            secrets,
        })
    }

    /// The product, as the URL's scheme names it (`mysql://` or
    /// `mariadb://`: both reach either through the same client).
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The connect options.
    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// Passwords to scrub from messages.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// `text` with this URL's password removed.
    pub(crate) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

fn error_reason(error: &sqlx::Error, secrets: &[String]) -> String {
    let text = match error {
        sqlx::Error::Configuration(inner) => inner.to_string(),
        other => other.to_string(),
    };
    scrub(&text, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_schemes() {
        let url = DatabaseUrl::parse("postgres://joc:hunter2@db:5432/joc").unwrap();
        assert_eq!(url.kind(), DatabaseKind::Postgresql);
        assert_eq!(url.redacted(), "postgres://joc:***@db:5432/joc");
        assert_eq!(url.user(), "joc");
        assert_eq!(url.database(), "joc");
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        let url = DatabaseUrl::parse("mariadb://joc:p%40ss@db/joc").unwrap();
        assert_eq!(url.kind(), DatabaseKind::Mariadb);
        assert!(url.secrets.contains(&"p@ss".to_owned()));
        assert_eq!(url.scrub("x p@ss y"), "x *** y");
        let url = DatabaseUrl::parse("sqlite:///tmp/lease.db?mode=rwc").unwrap();
        assert_eq!(url.kind(), DatabaseKind::Sqlite);
    }

    #[test]
    fn malformed_urls_are_refused_without_the_password() {
        for (url, expect) in [
            ("", "empty"),
            ("postgres://joc:hunter2@db:notaport/joc", "invalid port"),
            ("oracle://joc:hunter2@db/joc", "unsupported scheme"),
            ("postgres://joc:hunter2@/joc", "empty host"),
            ("postgres:///joc", "no host"),
            ("postgres://joc:hunter2@db:5432", "no database"),
            ("joc:hunter2@db", "unsupported scheme"),
            ("not a url", "relative URL"),
            ("mysql://joc:hunter2@db:99999/joc", "invalid port"),
        ] {
            let error = DatabaseUrl::parse(url).expect_err(url);
            let text = error.to_string();
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(text.contains(expect), "{url}: {text}");
            assert!(text.contains("Expected postgres://"), "{url}: {text}");
            assert!(!error.is_retryable());
        }
    }
}
