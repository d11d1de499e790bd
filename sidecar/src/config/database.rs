//! The database URL from the flags: a full URL or the Secret's parts, with
//! the TLS mode and CA file as sqlx reads them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{ConfigError, DatabaseKind, Flags, config_error, redact_url};

/// Characters kept as they are in a URL's user or password.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// The database URL (with its password) and product, from a full URL or the
/// Secret's parts; shared by the sidecar and the JOC configuration it writes.
pub fn database_from_flags(flags: &Flags) -> Result<(String, DatabaseKind), ConfigError> {
    let required = |value: Option<String>, setting: &'static str| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| config_error(setting, "is required"))
    };
    let flags = flags.clone();
    let declared_kind = match flags.database_type.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => Some(DatabaseKind::parse(name).ok_or_else(|| {
            config_error(
                "JOC_HA_DATABASE_TYPE (--database-type)",
                format!("{name:?} is not one of postgresql, mysql, mariadb, sqlite"),
            )
        })?),
    };

    let (database_url, database_kind) = match flags.database_url.filter(|u| !u.is_empty()) {
        Some(url) => {
            let kind = DatabaseKind::of_url(&url).ok_or_else(|| {
                config_error(
                    "JOC_HA_DATABASE_URL (--database-url)",
                    format!(
                        "{} does not start with postgres://, mysql://, mariadb:// or sqlite:",
                        redact_url(&url)
                    ),
                )
            })?;
            if let Some(declared) = declared_kind
                && !declared.accepts(kind)
            {
                return Err(config_error(
                    "JOC_HA_DATABASE_TYPE (--database-type)",
                    "does not match the scheme of JOC_HA_DATABASE_URL",
                ));
            }
            // sqlx speaks `mysql://` to MariaDB too.
            let url = match url.strip_prefix("mariadb://") {
                Some(rest) => format!("mysql://{rest}"),
                None => url,
            };
            let url = if kind.is_mysql_family() {
                query_credentials_into_user_info(url)?
            } else {
                url
            };
            // The declared product is the more precise (MariaDB behind `mysql://`).
            (url, declared_kind.unwrap_or(kind))
        }
        None => {
            let kind = declared_kind.ok_or_else(|| {
                    config_error(
                        "JOC_HA_DATABASE_URL (--database-url)",
                        "is required (or JOC_HA_DATABASE_TYPE with host, port, name, user and password)",
                    )
                })?;
            if kind == DatabaseKind::Sqlite {
                return Err(config_error(
                    "JOC_HA_DATABASE_URL (--database-url)",
                    "is required for sqlite (sqlite:///path/to/file)",
                ));
            }
            let host = required(
                flags.database_host,
                "JOC_HA_DATABASE_HOST (Secret key host)",
            )?;
            let name = required(
                flags.database_name,
                "JOC_HA_DATABASE_NAME (Secret key database)",
            )?;
            let user = required(
                flags.database_user,
                "JOC_HA_DATABASE_USER (Secret key user)",
            )?;
            let password = flags.database_password.unwrap_or_default();
            let port = match flags.database_port.filter(|p| !p.is_empty()) {
                Some(port) => port.trim().parse::<u16>().map_err(|_| {
                    config_error(
                        "JOC_HA_DATABASE_PORT (Secret key port)",
                        format!("{port:?} is not a port number"),
                    )
                })?,
                None if kind == DatabaseKind::Postgresql => 5432,
                None => 3306,
            };
            let scheme = if kind == DatabaseKind::Postgresql {
                "postgres"
            } else {
                "mysql"
            };
            let url = format!(
                "{scheme}://{}:{}@{host}:{port}/{name}",
                utf8_percent_encode(&user, USERINFO),
                utf8_percent_encode(&password, USERINFO),
            );
            (url, kind)
        }
    };
    let database_url = with_tls_mode(database_url, database_kind, flags.database_tls_mode)?;
    let database_url = with_ca_file(database_url, database_kind, flags.database_ca_file)?;
    Ok((database_url, database_kind))
}

fn with_tls_mode(
    url: String,
    kind: DatabaseKind,
    mode: Option<String>,
) -> Result<String, ConfigError> {
    let Some(mode) = mode.filter(|m| !m.is_empty()) else {
        return Ok(url);
    };
    const SETTING: &str = "JOC_HA_DATABASE_TLS_MODE (--database-tls-mode)";
    let parameter = match (kind, mode.as_str()) {
        (DatabaseKind::Sqlite, _) => {
            return Err(config_error(SETTING, "does not apply to sqlite"));
        }
        (
            DatabaseKind::Postgresql,
            "disable" | "prefer" | "require" | "verify-ca" | "verify-full",
        ) => {
            format!("sslmode={mode}")
        }
        (kind, "disable") if kind.is_mysql_family() => "ssl-mode=DISABLED".to_owned(),
        (kind, "prefer") if kind.is_mysql_family() => "ssl-mode=PREFERRED".to_owned(),
        (kind, "require") if kind.is_mysql_family() => "ssl-mode=REQUIRED".to_owned(),
        (kind, "verify-ca") if kind.is_mysql_family() => "ssl-mode=VERIFY_CA".to_owned(),
        (kind, "verify-full") if kind.is_mysql_family() => "ssl-mode=VERIFY_IDENTITY".to_owned(),
        _ => {
            return Err(config_error(
                SETTING,
                format!("{mode:?} is not one of disable, prefer, require, verify-ca, verify-full"),
            ));
        }
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}{parameter}"))
}

/// `mysql://db/joc?user=u&password=p` → `mysql://u:p@db/joc`: sqlx reads a
/// MySQL user and password only from the user info (PostgreSQL's, like
/// libpq, reads the query form too), and JOC's configuration is written from
/// the same URL, so both must see the same credentials.
fn query_credentials_into_user_info(url: String) -> Result<String, ConfigError> {
    const SETTING: &str = "JOC_HA_DATABASE_URL (--database-url)";
    let Ok(mut parsed) = ::url::Url::parse(&url) else {
        // Reported with its reason where the URL is used.
        return Ok(url);
    };
    let (mut user, mut password, mut rest) = (None, None, Vec::new());
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "user" => user = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            _ => rest.push((key.into_owned(), value.into_owned())),
        }
    }
    if user.is_none() && password.is_none() {
        return Ok(url);
    }
    let refuse = |problem: &str| {
        Err(config_error(
            SETTING,
            format!("{}: {problem}", redact_url(&url)),
        ))
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse(
            "names its user or password both in the user info and as ?user=/?password=; keep one",
        );
    }
    let encode = |text: &str| utf8_percent_encode(text, USERINFO).to_string();
    if let Some(user) = &user
        && parsed.set_username(&encode(user)).is_err()
    {
        return refuse("cannot carry a user");
    }
    if let Some(password) = &password
        && parsed.set_password(Some(&encode(password))).is_err()
    {
        return refuse("cannot carry a password");
    }
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok(parsed.to_string())
}

/// Names the CA file in the URL, as sqlx reads it (`sslrootcert` for
/// PostgreSQL, `ssl-ca` for MySQL/MariaDB); `render-joc-config` passes it on
/// to JOC's JDBC driver in that driver's words.
fn with_ca_file(
    url: String,
    kind: DatabaseKind,
    ca_file: Option<String>,
) -> Result<String, ConfigError> {
    let Some(ca_file) = ca_file.filter(|f| !f.trim().is_empty()) else {
        return Ok(url);
    };
    let key = match kind {
        DatabaseKind::Postgresql => "sslrootcert",
        DatabaseKind::Mysql | DatabaseKind::Mariadb => "ssl-ca",
        DatabaseKind::Sqlite => {
            return Err(config_error(
                "JOC_HA_DATABASE_CA_FILE (--database-ca-file)",
                "does not apply to sqlite",
            ));
        }
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}{key}={}",
        utf8_percent_encode(ca_file.trim(), CA_PATH)
    ))
}

/// Characters kept as they are in a file path in a URL's query.
const CA_PATH: &AsciiSet = &USERINFO.remove(b'/');
