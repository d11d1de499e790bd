//! JOC's configuration files, written by the js7 pods' `joc-config` init
//! container over the files the image ships (copied before by the
//! `joc-image-files` init container, which runs the cockpit image):
//!
//! * `joc.properties`: every key of the image's file is kept (its log
//!   configuration, for one: docs/joc-facts.md 4), the user's own keys
//!   (`spec.config`) are merged over them, and the operator's are set last:
//!   JOC's cluster timings, `cluster_id`, `create_db_tables`, and this pod's
//!   `ordering` (JOC refuses to start without one, fact 2).
//! * `hibernate.cfg.xml`: the database of the lease Secret, so JOC and the
//!   sidecars always use one database; the password is written as
//!   `${JS7_DBMS_PASSWORD}` (and the user as `${JS7_DBMS_USER}`), which JOC
//!   fills from the cockpit container's environment (fact 7), so it is in no
//!   file.
//! * `joc-settings.properties` (JOC's class path): `as_api_server` and
//!   `security_level` (fact 1), the image's other keys kept.
//! * the license (`spec.license`): the key files into `license/`, the
//!   license checker into `lib/js7-license.jar`, where the image's entrypoint
//!   installs it from (fact 3).

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::config::{DatabaseKind, Flags, RenderArgs};
use crate::lease::redact_url;

/// The keys the init container makes sure of in `joc.properties` when the
/// image's (or the user's) file lacks them: without `log4j.configuration`
/// JOC loads no log configuration (docs/joc-facts.md 4).
const DEFAULT_KEYS: [(&str, &str); 2] = [
    ("log4j.configuration", "log4j2.xml"),
    ("hibernate_configuration_file", "hibernate.cfg.xml"),
];

/// Placeholders SOS's `SOSHibernateJS7Resolver`
/// (`sos-commons/sos-commons-hibernate/.../configuration/resolver/`) fills
/// from the environment (or `-Djs7.dbms.*`) since 2.5.3.
const USER_PLACEHOLDER: &str = "${JS7_DBMS_USER}";
const PASSWORD_PLACEHOLDER: &str = "${JS7_DBMS_PASSWORD}";

/// JOC's security level when neither the spec nor the image names one
/// (SOS's `Globals.getJocSecurityLevel` defaults to low).
const DEFAULT_SECURITY_LEVEL: &str = "low";

/// Why the files could not be written; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("the database URL {url} cannot be turned into a JDBC URL: {reason}")]
    Url { url: String, reason: String },
    #[error("the database URL {url} names its user both in the user info and as ?user=; keep one")]
    AmbiguousUser { url: String },
    #[error("cannot read {path}: {source}")]
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
    #[error(
        "JOC's ordering: {0}; JOC needs an `ordering` from 0 to 99, unique among its instances (members: the StatefulSet ordinal, API servers: 50 + ordinal)"
    )]
    Ordering(String),
    #[error(
        "the license Secret mounted at {dir} {problem}: give it the key js7-license.jar and the license key file(s) from SOS (see spec.license)"
    )]
    License { dir: String, problem: String },
}

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

// ---------------------------------------------------------------------------
// Java .properties files, edited by key
// ---------------------------------------------------------------------------

/// A Java `.properties` file kept as its logical lines, so that keys can be
/// set while every other line (comments, the image's keys, their escapes)
/// stays as it was. The syntax is `java.util.Properties.load`'s: `#` or `!`
/// starts a comment line; a line ending in an odd number of `\` continues;
/// the key ends at the first unescaped `=`, `:` or white space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesFile {
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    /// The physical lines of this logical line, without line breaks.
    raw: Vec<String>,
    /// `None` for comments and blank lines.
    key: Option<String>,
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Java's unescaping of a key or value: `\t \n \r \f`, `\uXXXX`, and any
/// other escaped character stands for itself.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Escapes a value for writing (leading blanks and `\` kept literal).
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if index == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

impl Line {
    /// The logical line's text: continuations joined, their leading blanks dropped.
    fn joined(&self) -> String {
        let mut text = String::new();
        for (index, part) in self.raw.iter().enumerate() {
            let part = if index == 0 {
                part.as_str()
            } else {
                part.trim_start_matches(is_blank)
            };
            let last = index + 1 == self.raw.len();
            if !last && continues(part) {
                text.push_str(&part[..part.len() - 1]);
            } else {
                text.push_str(part);
            }
        }
        text
    }

    /// (key, value) of a key line, unescaped.
    fn entry(&self) -> Option<(String, String)> {
        self.key.as_ref()?;
        let text = self.joined();
        let text = text.trim_start_matches(is_blank);
        let mut key_end = text.len();
        let mut escaped = false;
        for (index, c) in text.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '=' || c == ':' || is_blank(c) {
                key_end = index;
                break;
            }
        }
        let key = unescape(&text[..key_end]);
        let mut rest = text[key_end..].trim_start_matches(is_blank);
        if let Some(stripped) = rest.strip_prefix(['=', ':']) {
            rest = stripped.trim_start_matches(is_blank);
        }
        Some((key, unescape(rest)))
    }
}

impl PropertiesFile {
    pub fn parse(text: &str) -> PropertiesFile {
        let mut lines = Vec::new();
        let mut physical = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
        while let Some(first) = physical.next() {
            let content = first.trim_start_matches(is_blank);
            if content.is_empty() || content.starts_with(['#', '!']) {
                lines.push(Line {
                    raw: vec![first.to_owned()],
                    key: None,
                });
                continue;
            }
            let mut raw = vec![first.to_owned()];
            while raw.last().is_some_and(|l| continues(l)) {
                match physical.next() {
                    Some(next) => raw.push(next.to_owned()),
                    None => break,
                }
            }
            let mut line = Line {
                raw,
                key: Some(String::new()),
            };
            line.key = line.entry().map(|(key, _)| key);
            lines.push(line);
        }
        PropertiesFile { lines }
    }

    /// The value Java would read for `key` (the last occurrence wins).
    pub fn get(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .rev()
            .filter(|l| l.key.as_deref() == Some(key))
            .find_map(|l| l.entry().map(|(_, value)| value))
    }

    /// Every key, in file order, with its raw lines.
    fn entries(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.key.is_some())
    }

    fn set_line(&mut self, key: &str, raw: Vec<String>) {
        let line = Line {
            raw,
            key: Some(key.to_owned()),
        };
        match self
            .lines
            .iter()
            .position(|l| l.key.as_deref() == Some(key))
        {
            Some(first) => {
                self.lines[first] = line;
                let mut index = 0;
                self.lines.retain(|l| {
                    index += 1;
                    index - 1 == first || l.key.as_deref() != Some(key)
                });
            }
            None => self.lines.push(line),
        }
    }

    /// Sets `key` to `value`: in place of its first line (later duplicates
    /// go), else appended.
    pub fn set(&mut self, key: &str, value: &str) {
        self.set_line(key, vec![format!("{key} = {}", escape_value(value))]);
    }

    /// Sets `key` only when the file lacks it.
    pub fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    /// Takes every key of `other` over, as `other` writes it.
    pub fn merge(&mut self, other: &PropertiesFile) {
        for line in other.entries() {
            if let Some(key) = &line.key {
                self.set_line(key, line.raw.clone());
            }
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            for part in &line.raw {
                text.push_str(part);
                text.push('\n');
            }
        }
        text
    }
}

// ---------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------

/// JOC's `ordering` of a pod: `offset` + the StatefulSet ordinal at the end
/// of its name (`joc-2` → 2, `joc-api-1` with offset 50 → 51). SOS's
/// `Globals.getOrdering` refuses a value outside 0–99 and `CheckInstance`
/// refuses a second live instance with the same one, so members (0–8) and
/// API servers (50–69) never collide and keep theirs across restarts.
pub fn ordering_of(pod_name: &str, offset: u32) -> Result<u32, ConfigFileError> {
    let ordinal = pod_name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .ok_or_else(|| {
            ConfigFileError::Ordering(format!(
                "the pod name {pod_name:?} does not end in a StatefulSet ordinal"
            ))
        })?;
    let ordering = offset.saturating_add(ordinal);
    if ordering > 99 {
        return Err(ConfigFileError::Ordering(format!(
            "pod {pod_name:?} would get {ordering}"
        )));
    }
    Ok(ordering)
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

fn read_optional(path: &Path) -> Result<Option<String>, ConfigFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same folder,
/// then a rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConfigFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let error = |source| ConfigFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.joc-ha.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    // The umask may have narrowed the mode; JOC must read what it needs.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)
}

fn create_dir(path: &Path) -> Result<(), ConfigFileError> {
    std::fs::create_dir_all(path).map_err(|source| ConfigFileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Copies the license Secret's files: `js7-license.jar` to
/// `<resources>/lib/js7-license.jar`, every other key to
/// `<resources>/license/<key>`. A Secret volume also holds `..data` and
/// timestamped folders; only the keys (names without a leading dot) count.
fn install_license(license_dir: &Path, resources: &Path) -> Result<Vec<String>, ConfigFileError> {
    let problem = |problem: String| ConfigFileError::License {
        dir: license_dir.display().to_string(),
        problem,
    };
    let entries =
        std::fs::read_dir(license_dir).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let mut keys: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| problem(format!("cannot be read: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        keys.push(entry.path());
    }
    keys.sort();
    let is_jar = |p: &Path| p.file_name().is_some_and(|n| n == "js7-license.jar");
    if !keys.iter().any(|p| is_jar(p)) {
        return Err(problem("has no key js7-license.jar".to_owned()));
    }
    if keys.iter().all(|p| is_jar(p)) {
        return Err(problem(
            "has no license key file besides js7-license.jar".to_owned(),
        ));
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut written = Vec::new();
    for key in keys {
        let name = key
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let target = if is_jar(&key) {
            resources.join("lib").join(&name)
        } else {
            resources.join("license").join(&name)
        };
        if let Some(parent) = target.parent() {
            create_dir(parent)?;
        }
        write_file(&target, &read(&key)?, 0o644)?;
        written.push(target.display().to_string());
    }
    Ok(written)
}

/// The `joc-config` init container: merges and writes JOC's files into
/// `args.out_dir` (JOC's resources folder, holding the image's files) and
/// `args.classes_dir`, then returns. Notes (where a credential had to go
/// into a file, what was left out) go to stderr; they never hold a
/// credential.
pub fn render_joc_config(
    url: &str,
    kind: DatabaseKind,
    flags: &Flags,
    args: &RenderArgs,
) -> Result<(), ConfigFileError> {
    let mut notes = Vec::new();
    let resources = &args.out_dir;

    // joc.properties: the image's, the user's over it, ours over both.
    let properties_path = resources.join("joc.properties");
    let image_properties = read_optional(&properties_path)?;
    if image_properties.is_none() {
        notes.push(format!(
            "{} does not exist: the image's files were not copied (init container joc-image-files), or the image ships none",
            properties_path.display()
        ));
    }
    let mut properties = PropertiesFile::parse(image_properties.as_deref().unwrap_or_default());
    let user_dir = args.user_config_dir.as_deref();
    if let Some(user) = user_dir
        .map(|d| d.join("joc.properties"))
        .map(|p| read_optional(&p))
        .transpose()?
        .flatten()
    {
        properties.merge(&PropertiesFile::parse(&user));
    }
    for (key, value) in DEFAULT_KEYS {
        properties.set_default(key, value);
    }
    if properties.get("hibernate_configuration_file").as_deref() != Some("hibernate.cfg.xml") {
        notes.push(
            "hibernate_configuration_file is set to hibernate.cfg.xml, the file joc-ha writes"
                .to_owned(),
        );
        properties.set("hibernate_configuration_file", "hibernate.cfg.xml");
    }
    for (key, value) in &args.properties {
        properties.set(key, value);
    }
    let pod_name = flags
        .pod_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            ConfigFileError::Ordering("JOC_HA_POD_NAME (--pod-name) is not set".to_owned())
        })?;
    let ordering = ordering_of(pod_name, args.ordering_offset)?;
    properties.set("ordering", &ordering.to_string());

    // hibernate.cfg.xml: the user's as given, else ours from the Secret.
    let user_xml_path = user_dir.map(|d| d.join("hibernate.cfg.xml"));
    let user_xml = user_xml_path
        .as_deref()
        .map(read_optional)
        .transpose()?
        .flatten();
    let xml = match user_xml {
        Some(xml) => xml,
        None => hibernate_cfg_xml(
            url,
            kind,
            flags.database_user.as_deref(),
            flags.database_password.as_deref(),
            &mut notes,
        )?,
    };

    // joc-settings.properties: the API-server flag and the security level.
    let mut settings = None;
    if let Some(classes) = &args.classes_dir {
        let path = classes.join("joc-settings.properties");
        let mut file = PropertiesFile::parse(read_optional(&path)?.as_deref().unwrap_or_default());
        file.set("as_api_server", if args.api_server { "yes" } else { "no" });
        match &args.security_level {
            Some(level) => file.set("security_level", level),
            None => file.set_default("security_level", DEFAULT_SECURITY_LEVEL),
        }
        settings = Some((path, file));
    }

    let license = match &args.license_dir {
        Some(dir) => install_license(dir, resources)?,
        None => Vec::new(),
    };
    write_file(&resources.join("hibernate.cfg.xml"), xml.as_bytes(), 0o600)?;
    write_file(&properties_path, properties.render().as_bytes(), 0o644)?;
    if let Some((path, file)) = settings {
        write_file(&path, file.render().as_bytes(), 0o644)?;
    }
    eprintln!(
        "joc-ha-sidecar: joc.properties: ordering = {ordering}{}",
        if args.api_server { " (API server)" } else { "" }
    );
    for written in license {
        eprintln!("joc-ha-sidecar: license: wrote {written}");
    }
    for note in notes {
        eprintln!("joc-ha-sidecar: note: {note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

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

    #[test]
    fn properties_keep_the_images_lines_and_set_ours() {
        let image = "# JOC's installer\n\
                     log4j.configuration = log4j2.xml\n\
                     hibernate_configuration_file=hibernate.cfg.xml\n\
                     title  long \\\n    value\n\
                     ordering = 7\n\
                     ordering : 8\n\
                     ! other comment\n";
        let mut file = PropertiesFile::parse(image);
        assert_eq!(file.get("title").as_deref(), Some("long value"));
        assert_eq!(
            file.get("ordering").as_deref(),
            Some("8"),
            "Java's last wins"
        );
        file.set("ordering", "0");
        file.set("cluster_polling_interval", "1");
        file.set_default("log4j.configuration", "other.xml");
        let text = file.render();
        assert_eq!(
            text,
            "# JOC's installer\n\
             log4j.configuration = log4j2.xml\n\
             hibernate_configuration_file=hibernate.cfg.xml\n\
             title  long \\\n    value\n\
             ordering = 0\n\
             ! other comment\n\
             cluster_polling_interval = 1\n"
        );
        let reread = PropertiesFile::parse(&text);
        assert_eq!(reread.get("ordering").as_deref(), Some("0"));
        let mut user = PropertiesFile::parse("title = mine\nkeystore_path = /x\n");
        user.merge(&PropertiesFile::parse("a\\:b = c\n"));
        assert_eq!(user.get("a:b").as_deref(), Some("c"));
        file.merge(&user);
        assert_eq!(file.get("title").as_deref(), Some("mine"));
        assert_eq!(file.get("keystore_path").as_deref(), Some("/x"));
        assert_eq!(
            PropertiesFile::parse("k=\\u0041\\ b").get("k").as_deref(),
            Some("A b")
        );
    }

    #[test]
    fn ordering_from_the_pod_name() {
        let cases: &[(&str, u32, Option<u32>)] = &[
            ("joc-0", 0, Some(0)),
            ("joc-8", 0, Some(8)),
            ("my-joc-3", 0, Some(3)),
            ("joc-api-0", 50, Some(50)),
            ("joc-api-19", 50, Some(69)),
            ("joc-api-50", 50, None),
            ("joc", 0, None),
            ("joc-api-7f9c", 50, None),
        ];
        for (pod, offset, want) in cases {
            assert_eq!(ordering_of(pod, *offset).ok(), *want, "{pod} + {offset}");
        }
    }

    fn flags(pod: &str, extra: &[&str]) -> Flags {
        let mut args = vec!["joc-ha-sidecar", "--pod-name", pod];
        args.extend_from_slice(extra);
        Flags::try_parse_from(args).expect("flags")
    }

    fn render_args(dir: &Path, extra: &[&str]) -> RenderArgs {
        let resources = dir.join("resources");
        let classes = dir.join("classes");
        let mut args = vec![
            "joc-ha-sidecar".to_owned(),
            "render-joc-config".to_owned(),
            "--out-dir".to_owned(),
            resources.display().to_string(),
            "--classes-dir".to_owned(),
            classes.display().to_string(),
            "--property".to_owned(),
            "cluster_polling_interval=1".to_owned(),
            "--property".to_owned(),
            "create_db_tables=true".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        match Flags::try_parse_from(args).expect("args").command {
            Some(crate::config::Command::RenderJocConfig(args)) => args,
            None => panic!("no subcommand"),
        }
    }

    fn image_files(dir: &Path) {
        std::fs::create_dir_all(dir.join("resources")).expect("mkdir");
        std::fs::create_dir_all(dir.join("classes")).expect("mkdir");
        std::fs::write(
            dir.join("resources/joc.properties"),
            "log4j.configuration = log4j2.xml\nhibernate_configuration_file = hibernate.cfg.xml\nkeystore_path = x\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("classes/joc-settings.properties"),
            "security_level = medium\nprev_as_api_server = no\n",
        )
        .expect("write");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_member_keeps_the_images_files_and_gets_its_ordering() {
        let dir = tempfile::tempdir().expect("tempdir");
        image_files(dir.path());
        let args = render_args(dir.path(), &[]);
        render_joc_config(
            "postgres://joc:pw@db/js7",
            DatabaseKind::Postgresql,
            &flags(
                "joc-2",
                &["--database-user", "joc", "--database-password", "pw"],
            ),
            &args,
        )
        .expect("rendered");
        let properties = PropertiesFile::parse(
            &std::fs::read_to_string(dir.path().join("resources/joc.properties")).expect("read"),
        );
        for (key, want) in [
            ("log4j.configuration", "log4j2.xml"),
            ("hibernate_configuration_file", "hibernate.cfg.xml"),
            ("keystore_path", "x"),
            ("cluster_polling_interval", "1"),
            ("create_db_tables", "true"),
            ("ordering", "2"),
        ] {
            assert_eq!(properties.get(key).as_deref(), Some(want), "{key}");
        }
        let settings = PropertiesFile::parse(
            &std::fs::read_to_string(dir.path().join("classes/joc-settings.properties"))
                .expect("read"),
        );
        assert_eq!(settings.get("as_api_server").as_deref(), Some("no"));
        assert_eq!(
            settings.get("security_level").as_deref(),
            Some("medium"),
            "the image's level is kept"
        );
        assert_eq!(settings.get("prev_as_api_server").as_deref(), Some("no"));
        let xml_path = dir.path().join("resources/hibernate.cfg.xml");
        let xml = std::fs::read_to_string(&xml_path).expect("xml");
        assert!(!xml.contains(">pw<"), "the password is in no file: {xml}");
        assert!(xml.contains(PASSWORD_PLACEHOLDER));
        assert_eq!(mode(&xml_path), 0o600);
        assert_eq!(mode(&dir.path().join("resources/joc.properties")), 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("resources"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary file stays: {leftovers:?}"
        );
    }

    #[test]
    fn an_api_server_with_a_level_user_files_and_a_license() {
        let dir = tempfile::tempdir().expect("tempdir");
        image_files(dir.path());
        let user = dir.path().join("user");
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::write(
            user.join("joc.properties"),
            "keystore_path = mine\nordering = 5\n",
        )
        .expect("write");
        let license = dir.path().join("license");
        std::fs::create_dir_all(license.join("..2026_12_01")).expect("mkdir");
        std::fs::write(license.join("js7-license.jar"), b"jar").expect("write");
        std::fs::write(license.join("js7-license.pem"), b"key").expect("write");
        let args = render_args(
            dir.path(),
            &[
                "--api-server",
                "--ordering-offset",
                "50",
                "--security-level",
                "high",
                "--user-config-dir",
                &user.display().to_string(),
                "--license-dir",
                &license.display().to_string(),
            ],
        );
        render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-api-1", &[]),
            &args,
        )
        .expect("rendered");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
        let properties = PropertiesFile::parse(&read("resources/joc.properties"));
        assert_eq!(
            properties.get("keystore_path").as_deref(),
            Some("mine"),
            "the user's key wins over the image's"
        );
        assert_eq!(
            properties.get("ordering").as_deref(),
            Some("51"),
            "ours win over the user's"
        );
        let settings = PropertiesFile::parse(&read("classes/joc-settings.properties"));
        assert_eq!(settings.get("as_api_server").as_deref(), Some("yes"));
        assert_eq!(settings.get("security_level").as_deref(), Some("high"));
        assert_eq!(read("resources/lib/js7-license.jar"), "jar");
        assert_eq!(read("resources/license/js7-license.pem"), "key");
        assert!(
            !dir.path()
                .join("resources/license/js7-license.jar")
                .exists()
        );
        assert!(read("resources/hibernate.cfg.xml").contains("jdbc:sqlite:/tmp/x.db"));
    }

    #[test]
    fn missing_image_files_default_and_a_bad_license_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("resources")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("classes")).expect("mkdir");
        let args = render_args(dir.path(), &[]);
        render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-0", &[]),
            &args,
        )
        .expect("rendered");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
        let properties = PropertiesFile::parse(&read("resources/joc.properties"));
        assert_eq!(
            properties.get("log4j.configuration").as_deref(),
            Some("log4j2.xml")
        );
        assert_eq!(properties.get("ordering").as_deref(), Some("0"));
        let settings = PropertiesFile::parse(&read("classes/joc-settings.properties"));
        assert_eq!(settings.get("security_level").as_deref(), Some("low"));

        let license = dir.path().join("license");
        std::fs::create_dir_all(&license).expect("mkdir");
        std::fs::write(license.join("js7-license.pem"), b"key").expect("write");
        let args = render_args(
            dir.path(),
            &["--license-dir", &license.display().to_string()],
        );
        let error = render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-0", &[]),
            &args,
        )
        .expect_err("no jar");
        assert!(error.to_string().contains("js7-license.jar"), "{error}");
        let error = render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc", &[]),
            &render_args(dir.path(), &[]),
        )
        .expect_err("no ordinal");
        assert!(error.to_string().contains("ordering"), "{error}");
    }
}
