//! Errors of the lease, each saying what the user can do, and the URL
//! redaction that keeps passwords out of every message.

use std::time::Duration;

/// An error of the lease module. Every text is safe to log: URLs appear only
/// redacted and known passwords are scrubbed from database messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("invalid lease configuration: {0}")]
    InvalidConfig(String),

    #[error(
        "invalid database URL {url}: {reason}. Expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, \
         mysql://USER:PASSWORD@HOST:PORT/DATABASE (MariaDB or MySQL) or sqlite://PATH?mode=rwc"
    )]
    InvalidUrl { url: String, reason: String },

    #[error(
        "cannot reach the database at {target}: {detail}. Check that the server is running and \
         that host and port in the URL are right; retrying with back-off"
    )]
    Unreachable { target: String, detail: String },

    #[error(
        "the database at {target} refused the login of user {user:?}: {detail}. Check the user \
         name and the password (not shown) in the URL; retrying with back-off"
    )]
    LoginRefused {
        target: String,
        user: String,
        detail: String,
    },

    #[error(
        "the database {database:?} does not exist at {target}: create it or fix the database \
         name in the URL; retrying with back-off"
    )]
    DatabaseNotFound { target: String, database: String },

    #[error(
        "the lease tables joc_ha_lease and joc_ha_member are missing in {target} (js7 mode: joc_ha_owner too): let the sidecar \
         apply its migrations (do not disable them) or apply migrations/{backend}/ by hand; \
         retrying with back-off"
    )]
    SchemaMissing {
        target: String,
        backend: &'static str,
    },

    #[error(
        "the database at {target} belongs to JocCluster {owner}: JOC keeps one cluster per \
         database (its own tables are database-wide), so JocCluster {ours} does not join and \
         writes nothing there. Give {ours} a database of its own; if {owner} no longer exists, \
         free the database with `DELETE FROM joc_ha_owner`. Retrying with back-off"
    )]
    DatabaseInUse {
        target: String,
        owner: String,
        ours: String,
    },

    #[error(
        "applying the lease schema to {target} failed: {detail}. The database user needs the \
         right to create tables; retrying with back-off"
    )]
    Migration { target: String, detail: String },

    #[error("lease statement `{op}` failed on {target}: {detail}")]
    Database {
        op: &'static str,
        target: String,
        detail: String,
    },

    #[error(
        "lost the connection to the database at {target} during `{op}`: {detail}; reconnecting"
    )]
    ConnectionLost {
        op: &'static str,
        target: String,
        detail: String,
    },

    #[error("no answer from the database at {target} within {timeout:?} for `{op}`; reconnecting")]
    Timeout {
        op: &'static str,
        target: String,
        timeout: Duration,
    },

    #[error("not connected to the database (last error: {0})")]
    NotConnected(String),

    #[error("the lease elector has stopped")]
    Stopped,
}

impl LeaseError {
    /// False for errors that no retry can fix (bad configuration or URL).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            LeaseError::InvalidConfig(_) | LeaseError::InvalidUrl { .. } | LeaseError::Stopped
        )
    }
}

/// `url` with the password (in the user-info part or a `password=` query
/// parameter) replaced by `***`. Works on malformed URLs too: anything between
/// the first `:` of the user info and the last `@` is hidden.
pub fn redact_url(url: &str) -> String {
    // Without "://" the scheme cannot be told from a user name: everything
    // before the first ':' is kept and the rest of the user info hidden.
    let (scheme, rest) = match url.find("://") {
        Some(index) => (&url[..index + 3], &url[index + 3..]),
        None => ("", url),
    };
    // The user info ends at the last '@' (a malformed password may contain
    // '/', '?', '#' or '@'); hiding too much is fine, too little is not.
    let mut redacted = String::with_capacity(url.len());
    redacted.push_str(scheme);
    let tail = match rest.rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            match user_info.find(':') {
                Some(colon) => {
                    redacted.push_str(&user_info[..colon]);
                    redacted.push_str(":***");
                }
                None => redacted.push_str(user_info),
            }
            &rest[at..]
        }
        None => rest,
    };
    redacted.push_str(&redact_query_password(tail));
    redacted
}

fn redact_query_password(text: &str) -> String {
    let Some(query_start) = text.find('?') else {
        return text.to_owned();
    };
    let (head, query) = text.split_at(query_start + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

/// Removes every occurrence of `secret` (as given and percent-decoded) from
/// `text`. Secrets shorter than 3 characters are left alone: hiding them
/// would mangle the message without protecting anything.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if secret.chars().count() >= 3 && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_in_user_info() {
        assert_eq!(
            redact_url("postgres://joc:s3cret@db:5432/joc"),
            "postgres://joc:***@db:5432/joc"
        );
        assert_eq!(
            redact_url("mysql://joc:p%40ss@db/joc?ssl-mode=required"),
            "mysql://joc:***@db/joc?ssl-mode=required"
        );
        assert_eq!(redact_url("postgres://joc@db/joc"), "postgres://joc@db/joc");
        assert_eq!(
            redact_url("sqlite:///var/lib/lease.db?mode=rwc"),
            "sqlite:///var/lib/lease.db?mode=rwc"
        );
    }

    #[test]
    fn redacts_malformed_urls_and_query_passwords() {
        let cases = [
            ("postgres://joc:pa/ss@db/joc", "pa/ss"),
            ("postgres://joc:pa@ss@db/joc", "pa@ss"),
            ("postgres:joc:hunter2@db/joc", "hunter2"),
            ("postgres://db/joc?user=joc&password=hunter2", "hunter2"),
            ("postgres://joc:hunter2@db:notaport/joc", "hunter2"),
            ("postgres://joc:hunter2@", "hunter2"),
            ("://joc:hunter2@db", "hunter2"),
        ];
        for (url, password) in cases {
            let redacted = redact_url(url);
            assert!(
                !redacted.contains(password),
                "{url} -> {redacted} still shows {password}"
            );
            assert!(redacted.contains("***"), "{url} -> {redacted}");
        }
    }

    #[test]
    fn scrub_hides_known_secrets() {
        let secrets = vec!["hunter2".to_owned(), "ab".to_owned()];
        assert_eq!(
            scrub("login hunter2 failed for ab", &secrets),
            "login *** failed for ab"
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let error = LeaseError::LoginRefused {
            target: redact_url("postgres://joc:hunter2@db/joc"),
            user: "joc".into(),
            detail: "password authentication failed".into(),
        };
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("Check the user name and the password"),
            "{text}"
        );
        assert!(error.is_retryable());
        assert!(!LeaseError::InvalidConfig("x".into()).is_retryable());
    }
}
