//! `hibernate.cfg.xml`: JOC's database connection, from the sidecar's URL.

use percent_encoding::percent_decode_str;

use super::ConfigFileError;
use crate::config::DatabaseKind;
use crate::lease::redact_url;

/// Placeholders SOS's `SOSHibernateJS7Resolver`
/// (`sos-commons/sos-commons-hibernate/.../configuration/resolver/`) fills
/// from the environment (or `-Djs7.dbms.*`) since 2.5.3.
const USER_PLACEHOLDER: &str = "${JS7_DBMS_USER}";
const PASSWORD_PLACEHOLDER: &str = "${JS7_DBMS_PASSWORD}";

/// How JOC gets the database user and password.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credential {
    /// What `hibernate.cfg.xml` holds: a placeholder or the value.
    written: String,
    /// Whether the value itself is in the file.
    in_file: bool,
}

/// The connection settings of `hibernate.cfg.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    driver: &'static str,
    dialect: &'static str,
    jdbc_url: String,
    user: String,
    password: String,
}

/// Reads the sidecar's URL (credentials in the user info or as `?user=` and
/// `?password=`; TLS as the sidecar writes it) as JOC's JDBC settings.
/// Unknown query parameters are left out and named in `notes`.
fn connection(
    url: &str,
    kind: DatabaseKind,
    notes: &mut Vec<String>,
) -> Result<Connection, ConfigFileError> {
    let invalid = |reason: &str| ConfigFileError::Url {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    if kind == DatabaseKind::Sqlite {
        // Evaluation only: JOC itself does not support SQLite; the test
        // stand-in reads this form.
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("not a sqlite: URL"))?;
        let path = path.split('?').next().unwrap_or_default();
        return Ok(Connection {
            driver: "org.sqlite.JDBC",
            dialect: "org.hibernate.community.dialect.SQLiteDialect",
            jdbc_url: format!("jdbc:sqlite:{path}"),
            user: String::new(),
            password: String::new(),
        });
    }
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
    let mut user = decode(parsed.username());
    let mut password = parsed.password().map(decode);
    let mut params = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            // libpq's and sqlx's form: postgres://db/joc?user=u&password=p.
            "user" => {
                if !user.is_empty() && user != value {
                    return Err(ConfigFileError::AmbiguousUser {
                        url: redact_url(url),
                    });
                }
                user = value.into_owned();
            }
            "password" => {
                if password.is_none() {
                    password = Some(value.into_owned());
                }
            }
            other => match jdbc_parameter(kind, other, &value) {
                Some(param) => params.push(param),
                None => notes.push(format!(
                    "the database URL's parameter {other:?} is not passed on to JOC's JDBC URL"
                )),
            },
        }
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    let password = password.unwrap_or_default();
    Ok(match kind {
        DatabaseKind::Postgresql => Connection {
            driver: "org.postgresql.Driver",
            dialect: "org.hibernate.dialect.PostgreSQLDialect",
            jdbc_url: format!(
                "jdbc:postgresql://{host}:{}/{database}{query}",
                parsed.port().unwrap_or(5432)
            ),
            user,
            password,
        },
        _ => Connection {
            driver: "org.mariadb.jdbc.Driver",
            dialect: "org.hibernate.dialect.MySQLDialect",
            jdbc_url: format!(
                "jdbc:mariadb://{host}:{}/{database}{query}",
                parsed.port().unwrap_or(3306)
            ),
            user,
            password,
        },
    })
}

/// The JDBC form of a TLS parameter of the sidecar's URL.
fn jdbc_parameter(kind: DatabaseKind, key: &str, value: &str) -> Option<String> {
    let encode = |v: &str| percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string();
    match (kind, key) {
        // pgJDBC uses libpq's names and values; sslrootcert is a PEM file.
        (DatabaseKind::Postgresql, "sslmode") => Some(format!("sslmode={}", encode(value))),
        (DatabaseKind::Postgresql, "sslrootcert") => Some(format!("sslrootcert={}", encode(value))),
        // MariaDB Connector/J 3: disable, trust (encrypt, no verification),
        // verify-ca, verify-full; serverSslCert takes the CA's PEM file.
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
        (DatabaseKind::Mysql | DatabaseKind::Mariadb, "ssl-ca") => {
            Some(format!("serverSslCert={}", encode(value)))
        }
        _ => None,
    }
}

/// Characters escaped in a JDBC URL's parameter value (a file path stays
/// readable).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// How a credential is written: the placeholder when the cockpit container
/// gets the same value from the Secret (`from_env`), else the value.
///
/// SOS's resolver substitutes with Java's `String.replaceFirst`, which reads
/// `$` and `\` in the *replacement* as group references and escapes: a value
/// holding either would reach the driver mangled (or fail), so such a value
/// is written into the file instead, with a note.
fn credential(
    what: &str,
    value: &str,
    from_env: Option<&str>,
    placeholder: &str,
    secret_key: &str,
    notes: &mut Vec<String>,
) -> Credential {
    let literal = Credential {
        written: value.to_owned(),
        in_file: true,
    };
    if value.is_empty() {
        return literal;
    }
    match from_env {
        Some(env) if env == value => {
            if value.contains(['$', '\\']) {
                notes.push(format!(
                    "the database {what} contains `$` or `\\`, which JOC's ${{...}} substitution cannot carry: it is written into hibernate.cfg.xml (mode 0600, in memory)"
                ));
                literal
            } else {
                Credential {
                    written: placeholder.to_owned(),
                    in_file: false,
                }
            }
        }
        _ => {
            notes.push(format!(
                "the database {what} is written into hibernate.cfg.xml (mode 0600, in memory): give the Secret a key `{secret_key}` equal to the URL's to keep it out of files"
            ));
            literal
        }
    }
}

/// JOC's `hibernate.cfg.xml` for the database at `url` (the sidecar's URL),
/// in the form of SOS's own examples
/// (`sos-commons-hibernate/src/test/resources/hibernate.cfg.*.xml`). The
/// user and password are written as `${JS7_DBMS_USER}` /
/// `${JS7_DBMS_PASSWORD}` when `env_user` / `env_password` (what the cockpit
/// container gets from the Secret's keys `user` / `password`) carry the same
/// values; `notes` says where they could not be.
pub fn hibernate_cfg_xml(
    url: &str,
    kind: DatabaseKind,
    env_user: Option<&str>,
    env_password: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<String, ConfigFileError> {
    let connection = connection(url, kind, notes)?;
    let user = credential(
        "user",
        &connection.user,
        env_user,
        USER_PLACEHOLDER,
        "user",
        &mut Vec::new(),
    );
    let password = credential(
        "password",
        &connection.password,
        env_password,
        PASSWORD_PLACEHOLDER,
        "password",
        notes,
    );
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
    xml.push_str(&property("hibernate.dialect", connection.dialect));
    xml.push_str(&property(
        "hibernate.connection.driver_class",
        connection.driver,
    ));
    xml.push_str(&property("hibernate.connection.url", &connection.jdbc_url));
    xml.push_str(&property("hibernate.connection.username", &user.written));
    xml.push_str(&property(
        "hibernate.connection.password",
        &password.written,
    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(
        url: &str,
        kind: DatabaseKind,
        user: Option<&str>,
        password: Option<&str>,
    ) -> (String, Vec<String>) {
        let mut notes = Vec::new();
        let xml = hibernate_cfg_xml(url, kind, user, password, &mut notes).expect("valid");
        (xml, notes)
    }

    fn property<'a>(xml: &'a str, name: &str) -> &'a str {
        let start = format!("<property name=\"{name}\">");
        let from = xml
            .find(&start)
            .map(|i| i + start.len())
            .unwrap_or(xml.len());
        let to = xml[from..]
            .find("</property>")
            .map_or(xml.len(), |i| from + i);
        &xml[from..to]
    }

    #[test]
    fn credentials_become_placeholders_when_the_cockpit_has_them() {
        // (url, env user, env password, written user, written password, notes)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            &'a str,
            usize,
        );
        let cases: &[Case] = &[
            // Secret with parts: the sidecar composes the URL; both in env.
            (
                "postgres://joc:p%26w%3Cd@db:5432/js7",
                Some("joc"),
                Some("p&w<d"),
                "${JS7_DBMS_USER}",
                "${JS7_DBMS_PASSWORD}",
                0,
            ),
            // Secret with only `url`: nothing in env, the values go into the file.
            ("postgres://joc:pw@db/js7", None, None, "joc", "pw", 1),
            // ?user=&password= (libpq form) render real credentials.
            (
                "postgres://db/js7?user=joc&password=pw",
                None,
                None,
                "joc",
                "pw",
                1,
            ),
            (
                "postgres://db/js7?user=joc&password=pw",
                Some("joc"),
                Some("pw"),
                "${JS7_DBMS_USER}",
                "${JS7_DBMS_PASSWORD}",
                0,
            ),
            (
                "mysql://db/js7?user=joc&password=pw",
                Some("joc"),
                Some("pw"),
                "${JS7_DBMS_USER}",
                "${JS7_DBMS_PASSWORD}",
                0,
            ),
            // A different `password` key than the URL's: the URL's wins, in the file.
            (
                "postgres://joc:pw@db/js7",
                Some("joc"),
                Some("other"),
                "${JS7_DBMS_USER}",
                "pw",
                1,
            ),
            // `$` or `\` cannot pass JOC's replaceFirst: written as is.
            (
                "postgres://joc:a%24b@db/js7",
                Some("joc"),
                Some("a$b"),
                "${JS7_DBMS_USER}",
                "a$b",
                1,
            ),
            // No password at all.
            (
                "postgres://joc@db/js7",
                Some("joc"),
                None,
                "${JS7_DBMS_USER}",
                "",
                0,
            ),
        ];
        for (url, user, password, want_user, want_password, notes) in cases {
            let kind = if url.starts_with("mysql") {
                DatabaseKind::Mysql
            } else {
                DatabaseKind::Postgresql
            };
            let (xml, got_notes) = xml(url, kind, *user, *password);
            assert_eq!(
                property(&xml, "hibernate.connection.username"),
                xml_escape(want_user),
                "{url}"
            );
            assert_eq!(
                property(&xml, "hibernate.connection.password"),
                xml_escape(want_password),
                "{url}"
            );
            assert_eq!(got_notes.len(), *notes, "{url}: {got_notes:?}");
            assert!(
                !property(&xml, "hibernate.connection.url").contains("password"),
                "{url}: {xml}"
            );
            for note in &got_notes {
                assert!(
                    !note.contains("pw") && !note.contains("a$b"),
                    "a note shows the password: {note}"
                );
            }
        }
    }

    #[test]
    fn tls_and_ca_reach_the_jdbc_url_in_each_drivers_words() {
        let (pg, _) = xml(
            "postgres://joc:pw@db.example:5433/js7?sslmode=verify-full&sslrootcert=/etc/joc-ha/database-ca/ca.crt",
            DatabaseKind::Postgresql,
            None,
            None,
        );
        assert_eq!(
            property(&pg, "hibernate.connection.url"),
            "jdbc:postgresql://db.example:5433/js7?sslmode=verify-full&amp;sslrootcert=/etc/joc-ha/database-ca/ca.crt"
        );
        assert!(pg.contains("org.postgresql.Driver"));
        assert!(pg.contains("hibernate.hikari.maximumPoolSize"));
        let (maria, _) = xml(
            "mysql://u:pw@maria/js7?ssl-mode=VERIFY_CA&ssl-ca=/etc/joc-ha/database-ca/ca.crt",
            DatabaseKind::Mysql,
            None,
            None,
        );
        assert_eq!(
            property(&maria, "hibernate.connection.url"),
            "jdbc:mariadb://maria:3306/js7?sslMode=verify-ca&amp;serverSslCert=/etc/joc-ha/database-ca/ca.crt"
        );
        assert!(maria.contains("org.mariadb.jdbc.Driver"));
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        let mut notes = Vec::new();
        for url in [
            "postgres://u:secret@/",
            "postgres://u:secret@db",
            "postgres://u:secret@db/x?user=other",
        ] {
            let error = hibernate_cfg_xml(url, DatabaseKind::Postgresql, None, None, &mut notes)
                .expect_err("refused");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        let mut notes = Vec::new();
        hibernate_cfg_xml(
            "postgres://u:p@db/x?application_name=joc",
            DatabaseKind::Postgresql,
            None,
            None,
            &mut notes,
        )
        .expect("valid");
        assert!(
            notes.iter().any(|n| n.contains("application_name")),
            "{notes:?}"
        );
    }
}
