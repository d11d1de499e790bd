//! JOC's configuration files written by the js7 pods' init container: the
//! database settings in `hibernate.cfg.xml` come from the same Secret as the
//! lease, so JOC and the sidecars always use one database; `joc.properties`
//! (JOC's cluster timings, and `cluster_id = api` for API servers) is copied
//! from the operator's ConfigMap.

use std::path::Path;

use percent_encoding::percent_decode_str;

use crate::config::DatabaseKind;
use crate::lease::redact_url;

/// Why the files could not be written; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("the database URL {url} cannot be turned into a JDBC URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {path}: {source}; is the operator's ConfigMap mounted?")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// JOC's `hibernate.cfg.xml` for the database at `url` (the sidecar's URL,
/// with its password), in the form of SOS's own examples
/// (`sos-commons-hibernate/src/test/resources/hibernate.cfg.*.xml`).
pub fn hibernate_cfg_xml(url: &str, kind: DatabaseKind) -> Result<String, ConfigFileError> {
    let invalid = |reason: &str| ConfigFileError::Url {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let (driver, dialect, jdbc_url, user, password) = match kind {
        DatabaseKind::Sqlite => {
            // Evaluation only: JOC itself does not support SQLite; the test
            // stand-in reads this form.
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .ok_or_else(|| invalid("not a sqlite: URL"))?;
            let path = path.split('?').next().unwrap_or_default();
            (
                "org.sqlite.JDBC",
                "org.hibernate.community.dialect.SQLiteDialect",
                format!("jdbc:sqlite:{path}"),
                String::new(),
                String::new(),
            )
        }
        DatabaseKind::Postgresql | DatabaseKind::Mysql | DatabaseKind::Mariadb => {
            let parsed = ::url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
            let host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("no host"))?;
            let database = parsed.path().trim_start_matches('/');
            if database.is_empty() {
                return Err(invalid("no database name"));
            }
            let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
            let user = decode(parsed.username());
            let password = parsed.password().map(decode).unwrap_or_default();
            let mut params = Vec::new();
            for (key, value) in parsed.query_pairs() {
                if let Some(param) = jdbc_tls_parameter(kind, &key, &value) {
                    params.push(param);
                }
            }
            let query = if params.is_empty() {
                String::new()
            } else {
                format!("?{}", params.join("&"))
            };
            match kind {
                DatabaseKind::Postgresql => (
                    "org.postgresql.Driver",
                    "org.hibernate.dialect.PostgreSQLDialect",
                    format!(
                        "jdbc:postgresql://{host}:{}/{database}{query}",
                        parsed.port().unwrap_or(5432)
                    ),
                    user,
                    password,
                ),
                _ => (
                    "org.mariadb.jdbc.Driver",
                    "org.hibernate.dialect.MySQLDialect",
                    format!(
                        "jdbc:mariadb://{host}:{}/{database}{query}",
                        parsed.port().unwrap_or(3306)
                    ),
                    user,
                    password,
                ),
            }
        }
    };
    let property = |name: &str, value: &str| {
        format!(
            "    <property name=\"{name}\">{}</property>\n",
            xml_escape(value)
        )
    };
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!-- Written by joc-ha from the JocCluster's database Secret; edits are overwritten at pod start. -->\n\
         <hibernate-configuration>\n  <session-factory>\n",
    );
    xml.push_str(&property("hibernate.dialect", dialect));
    xml.push_str(&property("hibernate.connection.driver_class", driver));
    xml.push_str(&property("hibernate.connection.url", &jdbc_url));
    xml.push_str(&property("hibernate.connection.username", &user));
    xml.push_str(&property("hibernate.connection.password", &password));
    xml.push_str(&property("hibernate.show_sql", "false"));
    xml.push_str(&property(
        "hibernate.connection.provider_class",
        "org.hibernate.hikaricp.internal.HikariCPConnectionProvider",
    ));
    // JOC's cluster service resizes its pool and needs this entry.
    xml.push_str(&property("hibernate.hikari.maximumPoolSize", "10"));
    xml.push_str("  </session-factory>\n</hibernate-configuration>\n");
    Ok(xml)
}

/// The JDBC form of the TLS parameter the sidecar's URL carries.
fn jdbc_tls_parameter(kind: DatabaseKind, key: &str, value: &str) -> Option<String> {
    match (kind, key) {
        // pgJDBC uses libpq's names and values.
        (DatabaseKind::Postgresql, "sslmode") => Some(format!("sslmode={value}")),
        // MariaDB Connector/J 3: disable, trust (encrypt, no verification),
        // verify-ca, verify-full.
        (DatabaseKind::Mysql | DatabaseKind::Mariadb, "ssl-mode") => {
            let mode = match value {
                "DISABLED" => "disable",
                "PREFERRED" | "REQUIRED" => "trust",
                "VERIFY_CA" => "verify-ca",
                "VERIFY_IDENTITY" => "verify-full",
                _ => return None,
            };
            Some(format!("sslMode={mode}"))
        }
        _ => None,
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `hibernate.cfg.xml` (owner-only) and a copy of `properties` as
/// `joc.properties` into `out_dir`.
pub fn render_joc_config(
    url: &str,
    kind: DatabaseKind,
    properties: &Path,
    out_dir: &Path,
) -> Result<(), ConfigFileError> {
    let xml = hibernate_cfg_xml(url, kind)?;
    let joc_properties =
        std::fs::read_to_string(properties).map_err(|source| ConfigFileError::Read {
            path: properties.display().to_string(),
            source,
        })?;
    write_file(&out_dir.join("hibernate.cfg.xml"), &xml, 0o600)?;
    write_file(&out_dir.join("joc.properties"), &joc_properties, 0o644)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), ConfigFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let error = |source| ConfigFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_settings_with_an_escaped_password_and_tls() {
        let xml = hibernate_cfg_xml(
            "postgres://joc:p%26w%3Cd@db.example:5433/js7?sslmode=verify-full",
            DatabaseKind::Postgresql,
        )
        .expect("valid");
        assert!(xml.contains(
            "<property name=\"hibernate.connection.url\">jdbc:postgresql://db.example:5433/js7?sslmode=verify-full</property>"
        ));
        assert!(xml.contains("<property name=\"hibernate.connection.username\">joc</property>"));
        assert!(
            xml.contains(
                "<property name=\"hibernate.connection.password\">p&amp;w&lt;d</property>"
            )
        );
        assert!(xml.contains("org.postgresql.Driver"));
        assert!(xml.contains("hibernate.hikari.maximumPoolSize"));
    }

    #[test]
    fn mariadb_settings_use_the_mariadb_driver_and_default_port() {
        let xml = hibernate_cfg_xml(
            "mysql://u:pw@maria/js7?ssl-mode=REQUIRED",
            DatabaseKind::Mariadb,
        )
        .expect("valid");
        assert!(xml.contains("jdbc:mariadb://maria:3306/js7?sslMode=trust"));
        assert!(xml.contains("org.mariadb.jdbc.Driver"));
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let error = hibernate_cfg_xml("postgres://u:secret@/", DatabaseKind::Postgresql)
            .expect_err("no host");
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn writes_both_files_with_the_password_file_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let properties = dir.path().join("in.properties");
        std::fs::write(&properties, "cluster_polling_interval = 1\n").expect("write");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &properties,
            &out,
        )
        .expect("rendered");
        let xml = std::fs::read_to_string(out.join("hibernate.cfg.xml")).expect("xml");
        assert!(xml.contains("jdbc:sqlite:/tmp/x.db"));
        assert_eq!(
            std::fs::read_to_string(out.join("joc.properties")).expect("props"),
            "cluster_polling_interval = 1\n"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out.join("hibernate.cfg.xml"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "no access for group or others");
    }
}
