//! A faithful stand-in for JOC Cockpit's own cluster service (the
//! `JOC_CLUSTER` / `JOC_INSTANCES` protocol), for end-to-end tests and the
//! demo. The specification is /work/js7-facts.md, gathered from SOS's public
//! source `sos-berlin/sos-components`; every rule below names the Java file it
//! follows. Where the sources say nothing, the comment says "ours".
//!
//! The binary `joc-standin` drives [`Member`]; tests use the readers
//! ([`joc_active_member`], [`cluster_row`], [`instances`]) and the config
//! writers ([`render_joc_properties`], [`write_resources`]).
//!
//! Assumption (stated, not in JOC's code path): a cluster license is present,
//! i.e. `ClusterModeResult.getUse() == true` in `JocCluster`, so every branch
//! guarded by `!getUse()` is never taken.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::Digest as _;
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

pub use crate::history::Dialect;

/// `JocClusterConfiguration.IDENTIFIER` = `ClusterServices.cluster.name()`:
/// the id of the single JOC_CLUSTER row.
pub const CLUSTER_ROW_ID: &str = "cluster";

/// `JocCluster.MSG_SWITCH_TO_API_SERVER`.
pub const MSG_SWITCH_TO_API_SERVER: &str = "The action to switch to an API server is not permitted";

/// What the stand-in writes into JOC_INSTANCES.VERSION (ours).
pub const STANDIN_VERSION: &str = concat!("standin-", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------
// Member id
// ---------------------------------------------------------------------------

/// `JocConfiguration`: `memberId = hostname + ":" + SOSString.hash256(dataDirectory.toString())`,
/// where `SOSString.hash256` is the lowercase hex SHA-256 of the UTF-8 bytes and
/// `dataDirectory = Paths.get(user.dir)`.
pub fn member_id(hostname: &str, data_dir: &str) -> String {
    let digest = sha2::Sha256::digest(java_path_string(data_dir).as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("{hostname}:{hex}")
}

/// `Paths.get(s).toString()` on Unix: repeated slashes collapse, a trailing
/// slash goes (except for the root).
pub fn java_path_string(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' {
            if !last_slash {
                out.push(c);
            }
            last_slash = true;
        } else {
            out.push(c);
            last_slash = false;
        }
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

// ---------------------------------------------------------------------------
// joc.properties
// ---------------------------------------------------------------------------

/// The cluster-relevant keys of joc.properties (`JocClusterConfiguration.setConfiguration`,
/// `JocConfiguration`), with JOC's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JocProperties {
    /// `cluster_polling_interval`, seconds, default 30.
    pub polling_interval_s: u64,
    /// `cluster_heart_beat_exceeded_interval`, seconds, default 60.
    pub heart_beat_exceeded_interval_s: u64,
    /// `cluster_polling_wait_interval_on_error`, seconds, default 2.
    pub polling_wait_interval_on_error_s: u64,
    /// `cluster_id`, default `joc`; `api` marks an API server (installer `--as-api-server`).
    pub cluster_id: String,
    /// `title`, default: the hostname.
    pub title: Option<String>,
    /// `ordering`, default 0.
    pub ordering: i32,
    /// `hibernate_configuration_file`, relative to joc.properties' folder; default `hibernate.cfg.xml`.
    pub hibernate_configuration_file: String,
}

impl Default for JocProperties {
    fn default() -> Self {
        JocProperties {
            polling_interval_s: 30,
            heart_beat_exceeded_interval_s: 60,
            polling_wait_interval_on_error_s: 2,
            cluster_id: "joc".to_owned(),
            title: None,
            ordering: 0,
            hibernate_configuration_file: "hibernate.cfg.xml".to_owned(),
        }
    }
}

impl JocProperties {
    /// Parses joc.properties text. The timing keys are `Integer.parseInt(value.trim())`
    /// in JOC; an unparsable value is an error here (ours: JOC's handling not found).
    pub fn parse(text: &str) -> Result<JocProperties> {
        let map = parse_java_properties(text);
        let mut props = JocProperties::default();
        let int = |key: &str| -> Result<Option<i64>> {
            match map.get(key) {
                Some(v) if !v.trim().is_empty() => {
                    Ok(Some(v.trim().parse::<i64>().with_context(|| {
                        format!("joc.properties: {key} = {v:?} is not an integer")
                    })?))
                }
                _ => Ok(None),
            }
        };
        let secs = |key: &str, default: u64| -> Result<u64> {
            match int(key)? {
                Some(v) if v < 0 => bail!("joc.properties: {key} must not be negative"),
                Some(v) => Ok(v as u64),
                None => Ok(default),
            }
        };
        props.polling_interval_s = secs("cluster_polling_interval", 30)?;
        props.heart_beat_exceeded_interval_s = secs("cluster_heart_beat_exceeded_interval", 60)?;
        props.polling_wait_interval_on_error_s = secs("cluster_polling_wait_interval_on_error", 2)?;
        if let Some(id) = map
            .get("cluster_id")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            props.cluster_id = id.to_owned();
        }
        props.title = map
            .get("title")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(ordering) = int("ordering")? {
            props.ordering =
                i32::try_from(ordering).context("joc.properties: ordering out of range")?;
        }
        if let Some(file) = map
            .get("hibernate_configuration_file")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            props.hibernate_configuration_file = file.to_owned();
        }
        Ok(props)
    }

    /// Installer `js7_install_joc.sh --as-api-server` sets `cluster_id` to `api`.
    /// How `Globals.isApiServer` derives from it was NOT FOUND; we read `api` as "API server".
    pub fn is_api_server(&self) -> bool {
        self.cluster_id == "api"
    }
}

/// A `java.util.Properties`-style reader: `#`/`!` comments, `key = value`,
/// `key: value` or `key value`, backslash line continuation and escapes.
pub fn parse_java_properties(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let (key, value) = split_property(&entry);
        map.insert(unescape_property(&key), unescape_property(&value));
    }
    if !logical.is_empty() {
        let (key, value) = split_property(&logical);
        map.insert(unescape_property(&key), unescape_property(&value));
    }
    map
}

fn split_property(entry: &str) -> (String, String) {
    let mut escaped = false;
    for (i, c) in entry.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                let key = entry[..i].to_owned();
                let mut rest = entry[i..].trim_start_matches([' ', '\t']);
                if !matches!(c, '=' | ':') {
                    if let Some(r) = rest.strip_prefix(['=', ':']) {
                        rest = r;
                    }
                } else {
                    rest = &rest[1..];
                }
                return (key, rest.trim_start_matches([' ', '\t']).to_owned());
            }
            _ => {}
        }
    }
    (entry.to_owned(), String::new())
}

fn unescape_property(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
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
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// joc.properties for tests: the two cluster timings and `cluster_id`
/// (`"joc"` for a cluster member, `"api"` for an API server).
pub fn render_joc_properties(poll_s: u64, timeout_s: u64, cluster_id: &str) -> String {
    format!(
        "# written by joc_ha_tests::joc\n\
         cluster_id = {cluster_id}\n\
         cluster_polling_interval = {poll_s}\n\
         cluster_heart_beat_exceeded_interval = {timeout_s}\n\
         hibernate_configuration_file = hibernate.cfg.xml\n"
    )
}

// ---------------------------------------------------------------------------
// hibernate.cfg.xml
// ---------------------------------------------------------------------------

/// The connection properties of hibernate.cfg.xml.
#[derive(Clone, PartialEq, Eq)]
pub struct HibernateConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for HibernateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HibernateConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HibernateConfig {
    /// Reads the `<property name="...">value</property>` elements.
    /// `SOSHibernateFactory.mapDeprecatedConfigurationProperties` maps
    /// `hibernate.connection.{url,username,password}` to
    /// `jakarta.persistence.jdbc.{url,user,password}`; both are accepted, the
    /// jakarta name wins when both are present (ours).
    pub fn parse(xml: &str) -> Result<HibernateConfig> {
        let props = xml_properties(xml);
        let get = |jakarta: &str, legacy: &str| {
            props
                .get(jakarta)
                .or_else(|| props.get(legacy))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        Ok(HibernateConfig {
            url: get("jakarta.persistence.jdbc.url", "hibernate.connection.url").context(
                "hibernate.cfg.xml names no hibernate.connection.url / jakarta.persistence.jdbc.url",
            )?,
            user: get("jakarta.persistence.jdbc.user", "hibernate.connection.username"),
            password: get("jakarta.persistence.jdbc.password", "hibernate.connection.password"),
        })
    }

    /// `SOSHibernateJS7Resolver`: only `${JS7_DBMS_URL_PARAMETER}` (in the URL),
    /// `${JS7_DBMS_USER}` and `${JS7_DBMS_PASSWORD}`, from the environment; an unset
    /// variable is "". (The JVM system properties `js7.dbms.*` JOC checks first do
    /// not exist here.) Generic `${ANY}` placeholders are left alone, as in JOC.
    pub fn resolve_placeholders(&self, env: impl Fn(&str) -> Option<String>) -> HibernateConfig {
        let var = |key: &str| env(key).unwrap_or_default();
        let mut url = self.url.clone();
        const URL_PARAM: &str = "${JS7_DBMS_URL_PARAMETER}";
        if url.contains(URL_PARAM) {
            // Leading '?'/'&' of the value are stripped and the right separator
            // is inserted (the resolver's normalisation; exact code NOT FOUND,
            // this is our reading of it).
            let value = var("JS7_DBMS_URL_PARAMETER");
            let value = value.trim_start_matches(['?', '&']);
            let base = url.replace(URL_PARAM, "");
            let base = base.trim_end_matches(['?', '&']).to_owned();
            url = if value.is_empty() {
                base
            } else if base.contains('?') {
                format!("{base}&{value}")
            } else {
                format!("{base}?{value}")
            };
        }
        let resolve = |s: &Option<String>, key: &str| {
            s.as_ref()
                .map(|s| s.replace(&format!("${{{key}}}"), &var(key)))
        };
        HibernateConfig {
            url,
            user: resolve(&self.user, "JS7_DBMS_USER"),
            password: resolve(&self.password, "JS7_DBMS_PASSWORD"),
        }
    }

    /// The sqlx URL for this JDBC URL, user and password (percent-encoded).
    pub fn sqlx_url(&self) -> Result<String> {
        jdbc_to_sqlx_url(&self.url, self.user.as_deref(), self.password.as_deref())
    }
}

fn xml_properties(xml: &str) -> BTreeMap<String, String> {
    // Comments out first, so that commented-out properties do not count.
    let mut text = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = match rest[start..].find("-->") {
            Some(end) => &rest[start + end + 3..],
            None => "",
        };
    }
    text.push_str(rest);

    let mut map = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<property") {
        rest = &rest[start + "<property".len()..];
        let Some(tag_end) = rest.find('>') else { break };
        let attrs = &rest[..tag_end];
        let self_closing = attrs.trim_end().ends_with('/');
        let name = attribute(attrs, "name");
        rest = &rest[tag_end + 1..];
        if self_closing {
            continue;
        }
        let Some(close) = rest.find("</property>") else {
            break;
        };
        if let Some(name) = name {
            map.insert(name, xml_unescape(rest[..close].trim()));
        }
        rest = &rest[close + "</property>".len()..];
    }
    map
}

fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(pos) = rest.find(name) {
        let after = rest[pos + name.len()..].trim_start();
        let before_ok = pos == 0 || rest[..pos].ends_with(char::is_whitespace);
        if before_ok && let Some(after) = after.strip_prefix('=') {
            let after = after.trim_start();
            let quote = after.chars().next()?;
            if quote == '"' || quote == '\'' {
                let value = &after[1..];
                let end = value.find(quote)?;
                return Some(xml_unescape(&value[..end]));
            }
        }
        rest = &rest[pos + name.len()..];
    }
    None
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Userinfo characters that must be percent-encoded in a URL.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `jdbc:postgresql://host[:port]/db[?params]`, `jdbc:mariadb://…`, `jdbc:mysql://…`
/// and `jdbc:sqlite:/path/file.db` → the sqlx URL, with user and password
/// percent-encoded into it. JDBC parameters are passed on (sqlx ignores the
/// ones it does not know).
pub fn jdbc_to_sqlx_url(jdbc: &str, user: Option<&str>, password: Option<&str>) -> Result<String> {
    let jdbc = jdbc.trim();
    let rest = jdbc
        .strip_prefix("jdbc:")
        .with_context(|| format!("not a JDBC URL (no jdbc: prefix): {jdbc}"))?;
    if let Some(path) = rest.strip_prefix("sqlite:") {
        if path.is_empty() {
            bail!("jdbc:sqlite: URL names no file");
        }
        let (path, _params) = path.split_once('?').unwrap_or((path, ""));
        return Ok(format!("sqlite://{path}?mode=rwc"));
    }
    let (scheme, after) = if let Some(a) = rest.strip_prefix("postgresql://") {
        ("postgres", a)
    } else if let Some(a) = rest.strip_prefix("mariadb://") {
        ("mysql", a)
    } else if let Some(a) = rest.strip_prefix("mysql://") {
        ("mysql", a)
    } else {
        bail!(
            "unsupported JDBC URL {jdbc:?}: the stand-in knows jdbc:postgresql://, jdbc:mariadb://, jdbc:mysql:// and jdbc:sqlite:"
        );
    };
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    if authority.is_empty() {
        bail!("JDBC URL {jdbc:?} names no host");
    }
    if authority.contains(',') {
        bail!("JDBC URL {jdbc:?}: several hosts are not supported by the stand-in");
    }
    let userinfo = match (user, password) {
        (None, None) => String::new(),
        (user, password) => {
            let mut s =
                percent_encoding::utf8_percent_encode(user.unwrap_or(""), USERINFO).to_string();
            if let Some(password) = password {
                s.push(':');
                s.push_str(&percent_encoding::utf8_percent_encode(password, USERINFO).to_string());
            }
            s.push('@');
            s
        }
    };
    Ok(format!("{scheme}://{userinfo}{authority}{path}"))
}

/// The inverse for tests: a sqlx URL (as `TestDb::url()` gives) → JDBC URL,
/// user, password (decoded), for writing a hibernate.cfg.xml.
pub fn sqlx_to_jdbc(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        return Ok((format!("jdbc:sqlite:{path}"), None, None));
    }
    let (jdbc_scheme, rest) = if let Some(r) = url.strip_prefix("postgres://") {
        ("postgresql", r)
    } else if let Some(r) = url.strip_prefix("postgresql://") {
        ("postgresql", r)
    } else if let Some(r) = url.strip_prefix("mysql://") {
        ("mariadb", r)
    } else if let Some(r) = url.strip_prefix("mariadb://") {
        ("mariadb", r)
    } else {
        bail!("unsupported database URL scheme");
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password, host) = match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((u, p)) => (Some(decode(u)), Some(decode(p)), host),
            None => (Some(decode(info)), None, host),
        },
        None => (None, None, authority),
    };
    Ok((format!("jdbc:{jdbc_scheme}://{host}{path}"), user, password))
}

/// hibernate.cfg.xml in SOS's `hibernate.connection.*` style (see
/// `sos-commons-hibernate/src/test/resources/hibernate.cfg.pgsql.xml`).
pub fn render_hibernate_cfg(jdbc_url: &str, user: Option<&str>, password: Option<&str>) -> String {
    let mut props = format!(
        "    <property name=\"hibernate.connection.url\">{}</property>\n",
        xml_escape(jdbc_url)
    );
    if let Some(user) = user {
        props.push_str(&format!(
            "    <property name=\"hibernate.connection.username\">{}</property>\n",
            xml_escape(user)
        ));
    }
    if let Some(password) = password {
        props.push_str(&format!(
            "    <property name=\"hibernate.connection.password\">{}</property>\n",
            xml_escape(password)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<hibernate-configuration>\n  <session-factory>\n{props}    <property name=\"hibernate.show_sql\">false</property>\n    <property name=\"hibernate.hikari.maximumPoolSize\">10</property>\n  </session-factory>\n</hibernate-configuration>\n"
    )
}

/// Writes `joc.properties` and a `hibernate.cfg.xml` for `sqlx_url` into `dir`
/// (created if missing): a resources folder the stand-in reads like JOC.
pub fn write_resources(dir: &Path, joc_properties: &str, sqlx_url: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (jdbc, user, password) = sqlx_to_jdbc(sqlx_url)?;
    std::fs::write(dir.join("joc.properties"), joc_properties)?;
    std::fs::write(
        dir.join("hibernate.cfg.xml"),
        render_hibernate_cfg(&jdbc, user.as_deref(), password.as_deref()),
    )?;
    Ok(())
}

/// joc.properties and the database URL read from a resources folder, like JOC.
pub fn read_resources(
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(JocProperties, String)> {
    let props_path = dir.join("joc.properties");
    let text = std::fs::read_to_string(&props_path)
        .with_context(|| format!("reading {}", props_path.display()))?;
    let props = JocProperties::parse(&text)?;
    let hib_path = dir.join(&props.hibernate_configuration_file);
    let xml = std::fs::read_to_string(&hib_path)
        .with_context(|| format!("reading {}", hib_path.display()))?;
    let url = HibernateConfig::parse(&xml)
        .with_context(|| format!("in {}", hib_path.display()))?
        .resolve_placeholders(env)
        .sqlx_url()?;
    Ok((props, url))
}

/// The URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let user = info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// SQL per dialect
// ---------------------------------------------------------------------------

/// PostgreSQL DDL as in SOS's "Tables for PostGres" script (facts §2.1), with
/// `IF NOT EXISTS` in place of the script's `tmp()` function guards.
const POSTGRES_DDL: [&str; 3] = [
    "CREATE SEQUENCE IF NOT EXISTS SEQ_JOC_I INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    "ID"                    BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_JOC_I'),
    "CLUSTER_ID"            VARCHAR(10)   NOT NULL,
    "MEMBER_ID"             VARCHAR(165)  NOT NULL, /* HOSTNAME:hash(DATA_DIRECTORY) */
    "OS_ID"                 BIGINT        NOT NULL,
    "DATA_DIRECTORY"        VARCHAR(255)  NOT NULL,
    "SECURITY_LEVEL"        VARCHAR(10)   NOT NULL,
    "TIMEZONE"              VARCHAR(30)   NOT NULL,
    "STARTED_AT"            TIMESTAMP     NOT NULL,
    "TITLE"                 VARCHAR(30)   NULL,
    "ORDERING"              SMALLINT      DEFAULT 0 NOT NULL,
    "URI"                   VARCHAR(255)  NULL,
    "HEART_BEAT"            TIMESTAMP     NOT NULL,
    "API_SERVER"            NUMERIC(1)    NOT NULL,
    "VERSION"               VARCHAR(30)   NULL,
    "CERTIFICATE"           VARCHAR(4000) NULL,     /* X.509 Certificate*/
    CONSTRAINT UNIQUE_JI_MID UNIQUE ("MEMBER_ID"),
    PRIMARY KEY ("ID")
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    "ID"                        VARCHAR(10)   NOT NULL,
    "MEMBER_ID"                 VARCHAR(165)  NOT NULL,
    "HEART_BEAT"                TIMESTAMP     NOT NULL,
    "SWITCH_MEMBER_ID"          VARCHAR(165)  NULL,
    "SWITCH_HEART_BEAT"         TIMESTAMP     NULL,
    "NOTIFICATION_MEMBER_ID"    VARCHAR(165)  NULL,
    "NOTIFICATION"              VARCHAR(100)  NULL,
    CONSTRAINT UNIQUE_JC_MID UNIQUE ("MEMBER_ID"),
    PRIMARY KEY ("ID")
)"#,
];

/// MySQL/MariaDB DDL: OURS. SOS's MySQL script was NOT FOUND; this is the
/// PostgreSQL script translated: TIMESTAMP → DATETIME (whole seconds, as JOC's
/// times are compared in whole seconds; DATETIME has no time zone conversion,
/// unlike MySQL's TIMESTAMP), the sequence → AUTO_INCREMENT, NUMERIC(1) → TINYINT.
const MYSQL_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    `ID`                    BIGINT        NOT NULL AUTO_INCREMENT,
    `CLUSTER_ID`            VARCHAR(10)   NOT NULL,
    `MEMBER_ID`             VARCHAR(165)  NOT NULL,
    `OS_ID`                 BIGINT        NOT NULL,
    `DATA_DIRECTORY`        VARCHAR(255)  NOT NULL,
    `SECURITY_LEVEL`        VARCHAR(10)   NOT NULL,
    `TIMEZONE`              VARCHAR(30)   NOT NULL,
    `STARTED_AT`            DATETIME      NOT NULL,
    `TITLE`                 VARCHAR(30)   NULL,
    `ORDERING`              SMALLINT      NOT NULL DEFAULT 0,
    `URI`                   VARCHAR(255)  NULL,
    `HEART_BEAT`            DATETIME      NOT NULL,
    `API_SERVER`            TINYINT       NOT NULL,
    `VERSION`               VARCHAR(30)   NULL,
    `CERTIFICATE`           VARCHAR(4000) NULL,
    CONSTRAINT UNIQUE_JI_MID UNIQUE (`MEMBER_ID`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    `ID`                        VARCHAR(10)   NOT NULL,
    `MEMBER_ID`                 VARCHAR(165)  NOT NULL,
    `HEART_BEAT`                DATETIME      NOT NULL,
    `SWITCH_MEMBER_ID`          VARCHAR(165)  NULL,
    `SWITCH_HEART_BEAT`         DATETIME      NULL,
    `NOTIFICATION_MEMBER_ID`    VARCHAR(165)  NULL,
    `NOTIFICATION`              VARCHAR(100)  NULL,
    CONSTRAINT UNIQUE_JC_MID UNIQUE (`MEMBER_ID`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
];

/// SQLite DDL for the single-host demo: OURS (JOC has no SQLite support; H2
/// is its evaluation database). Times are TEXT 'YYYY-MM-DD HH:MM:SS' in UTC.
const SQLITE_DDL: [&str; 2] = [
    r#"CREATE TABLE IF NOT EXISTS JOC_INSTANCES (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "CLUSTER_ID"     VARCHAR(10)   NOT NULL,
    "MEMBER_ID"      VARCHAR(165)  NOT NULL UNIQUE,
    "OS_ID"          BIGINT        NOT NULL,
    "DATA_DIRECTORY" VARCHAR(255)  NOT NULL,
    "SECURITY_LEVEL" VARCHAR(10)   NOT NULL,
    "TIMEZONE"       VARCHAR(30)   NOT NULL,
    "STARTED_AT"     TEXT          NOT NULL,
    "TITLE"          VARCHAR(30)   NULL,
    "ORDERING"       SMALLINT      NOT NULL DEFAULT 0,
    "URI"            VARCHAR(255)  NULL,
    "HEART_BEAT"     TEXT          NOT NULL,
    "API_SERVER"     NUMERIC(1)    NOT NULL,
    "VERSION"        VARCHAR(30)   NULL,
    "CERTIFICATE"    VARCHAR(4000) NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CLUSTER (
    "ID"                     VARCHAR(10)  NOT NULL PRIMARY KEY,
    "MEMBER_ID"              VARCHAR(165) NOT NULL UNIQUE,
    "HEART_BEAT"             TEXT         NOT NULL,
    "SWITCH_MEMBER_ID"       VARCHAR(165) NULL,
    "SWITCH_HEART_BEAT"      TEXT         NULL,
    "NOTIFICATION_MEMBER_ID" VARCHAR(165) NULL,
    "NOTIFICATION"           VARCHAR(100) NULL
)"#,
];

/// The DDL statements for a dialect.
pub fn ddl(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Postgres => POSTGRES_DDL.to_vec(),
        Dialect::MySql => MYSQL_DDL.to_vec(),
        Dialect::Sqlite => SQLITE_DDL.to_vec(),
    }
}

/// Writes `sql` (double-quoted identifiers, `?` binds) in the dialect's form.
fn sql(d: Dialect, s: &str) -> String {
    match d {
        Dialect::Postgres => {
            let mut out = String::with_capacity(s.len() + 8);
            let mut n = 0;
            for c in s.chars() {
                if c == '?' {
                    n += 1;
                    out.push_str(&format!("${n}"));
                } else {
                    out.push(c);
                }
            }
            out
        }
        Dialect::MySql => s.replace('"', "`"),
        Dialect::Sqlite => s.to_owned(),
    }
}

/// The database's UTC "now" (`SOSHibernateFactory`: PGSQL `select timezone('UTC', now())`,
/// MYSQL `select utc_timestamp()`; SQLite ours).
fn now_utc(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "timezone('UTC', now())",
        Dialect::MySql => "UTC_TIMESTAMP()",
        Dialect::Sqlite => "strftime('%Y-%m-%d %H:%M:%S','now')",
    }
}

/// Whole seconds since the epoch of a UTC timestamp expression, floored like
/// `Date.getTime() / 1_000` in `JocCluster.isHeartBeatExceeded`.
fn epoch(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Postgres => format!("CAST(FLOOR(EXTRACT(EPOCH FROM {expr})) AS BIGINT)"),
        Dialect::MySql => format!("TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {expr})"),
        Dialect::Sqlite => format!("CAST(strftime('%s', {expr}) AS INTEGER)"),
    }
}

/// A UTC timestamp from a bound epoch-seconds value (NULL stays NULL).
fn from_epoch(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "(to_timestamp(CAST(? AS DOUBLE PRECISION)) AT TIME ZONE 'UTC')",
        Dialect::MySql => "TIMESTAMPADD(SECOND, ?, '1970-01-01 00:00:00')",
        Dialect::Sqlite => "datetime(?, 'unixepoch')",
    }
}

fn int(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Postgres => format!("CAST({expr} AS BIGINT)"),
        Dialect::MySql => format!("CAST({expr} AS SIGNED)"),
        Dialect::Sqlite => format!("CAST({expr} AS INTEGER)"),
    }
}

/// `JocCluster.isHeartBeatExceeded(now, heartBeat)` (newest): whole seconds,
/// strictly greater than the interval; a missing time counts as exceeded.
pub fn is_heart_beat_exceeded(now_s: i64, heart_beat_s: Option<i64>, interval_s: u64) -> bool {
    match heart_beat_s {
        None => true,
        Some(hb) => now_s - hb > interval_s as i64,
    }
}

/// Connects; SQLite gets a busy timeout so that several stand-ins can share a file.
pub use crate::db::connect_any as connect;

/// Creates JOC_INSTANCES and JOC_CLUSTER if missing, standing in for JOC's
/// installer. Idempotent; safe when several stand-ins start at once
/// (PostgreSQL serialises on an advisory lock, since concurrent
/// `CREATE … IF NOT EXISTS` can collide there).
pub async fn create_schema(url: &str) -> Result<()> {
    let dialect = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let mut tx = conn.begin().await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7297631142)")
            .execute(&mut *tx)
            .await?;
    }
    for statement in ddl(dialect) {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .context("creating JOC's tables")?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/// The JOC_CLUSTER row, times as whole epoch seconds (UTC), with the
/// database's UTC now read in the same statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub member_id: String,
    pub heart_beat: i64,
    pub switch_member_id: Option<String>,
    pub switch_heart_beat: Option<i64>,
    pub notification_member_id: Option<String>,
    pub notification: Option<String>,
    /// The database's UTC now when read.
    pub db_now: i64,
}

/// A JOC_INSTANCES row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub member_id: String,
    pub cluster_id: String,
    pub data_directory: String,
    pub title: Option<String>,
    pub ordering: i64,
    pub uri: Option<String>,
    pub api_server: bool,
    pub version: Option<String>,
    /// HEART_BEAT, epoch seconds UTC.
    pub heart_beat: i64,
    /// Database UTC now minus HEART_BEAT, whole seconds.
    pub age_s: i64,
}

impl Instance {
    /// Fresh = not exceeded by `JocCluster.isHeartBeatExceeded`.
    pub fn is_fresh(&self, heart_beat_exceeded_interval_s: u64) -> bool {
        self.age_s <= heart_beat_exceeded_interval_s as i64
    }

    /// JOC's name for it in messages: `title`, else `clusterId#ordering`.
    pub fn display_name(&self) -> String {
        match &self.title {
            Some(t) => t.clone(),
            None => format!("{}#{}", self.cluster_id, self.ordering),
        }
    }
}

type ClusterTuple = (
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);

async fn read_cluster(conn: &mut AnyConnection, d: Dialect) -> Result<Option<ClusterRow>> {
    // JOC: `from DBItemJocCluster` (the single row).
    let q = sql(
        d,
        &format!(
            r#"SELECT "MEMBER_ID", {}, "SWITCH_MEMBER_ID", {}, "NOTIFICATION_MEMBER_ID", "NOTIFICATION", {} FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
            epoch(d, "\"HEART_BEAT\""),
            epoch(d, "\"SWITCH_HEART_BEAT\""),
            epoch(d, now_utc(d)),
        ),
    );
    let row: Option<ClusterTuple> = sqlx::query_as(AssertSqlSafe(q))
        .fetch_optional(&mut *conn)
        .await
        .context("reading JOC_CLUSTER")?;
    Ok(row.map(|r| ClusterRow {
        member_id: r.0,
        heart_beat: r.1,
        switch_member_id: r.2,
        switch_heart_beat: r.3,
        notification_member_id: r.4,
        notification: r.5,
        db_now: r.6,
    }))
}

type InstanceTuple = (
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
);

fn instance_select(d: Dialect) -> String {
    format!(
        r#"SELECT "MEMBER_ID", "CLUSTER_ID", "DATA_DIRECTORY", "TITLE", {}, "URI", {}, "VERSION", {}, {} FROM JOC_INSTANCES"#,
        int(d, "\"ORDERING\""),
        int(d, "\"API_SERVER\""),
        epoch(d, "\"HEART_BEAT\""),
        epoch(d, now_utc(d)),
    )
}

fn instance_of(r: InstanceTuple) -> Instance {
    Instance {
        member_id: r.0,
        cluster_id: r.1,
        data_directory: r.2,
        title: r.3,
        ordering: r.4,
        uri: r.5,
        api_server: r.6 != 0,
        version: r.7,
        heart_beat: r.8,
        age_s: r.9 - r.8,
    }
}

async fn read_instance(
    conn: &mut AnyConnection,
    d: Dialect,
    member_id: &str,
) -> Result<Option<Instance>> {
    let q = sql(
        d,
        &format!(r#"{} WHERE "MEMBER_ID" = ?"#, instance_select(d)),
    );
    let row: Option<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await
        .context("reading JOC_INSTANCES")?;
    Ok(row.map(instance_of))
}

/// The JOC_CLUSTER row, if any.
pub async fn cluster_row(url: &str) -> Result<Option<ClusterRow>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    read_cluster(&mut conn, d).await
}

/// Which member JOC's protocol says is active: JOC_CLUSTER.MEMBER_ID.
pub async fn joc_active_member(url: &str) -> Result<Option<String>> {
    Ok(cluster_row(url).await?.map(|r| r.member_id))
}

/// Every JOC_INSTANCES row, ordered by ORDERING then MEMBER_ID, with its
/// heartbeat's age by database time.
pub async fn instances(url: &str) -> Result<Vec<Instance>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(r#"{} ORDER BY "ORDERING", "MEMBER_ID""#, instance_select(d)),
    );
    let rows: Vec<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
        .fetch_all(&mut conn)
        .await
        .context("reading JOC_INSTANCES")?;
    Ok(rows.into_iter().map(instance_of).collect())
}

/// The database's UTC now, whole epoch seconds.
pub async fn db_now(url: &str) -> Result<i64> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = format!("SELECT {}", epoch(d, now_utc(d)));
    Ok(sqlx::query_scalar(AssertSqlSafe(q))
        .fetch_one(&mut conn)
        .await?)
}

// ---------------------------------------------------------------------------
// The member: JocCluster's per-poll logic
// ---------------------------------------------------------------------------

/// A timestamp to write: the database's UTC now, or a value read earlier.
#[derive(Debug, Clone, Copy)]
enum Ts {
    Now,
    Epoch(Option<i64>),
}

/// Who this stand-in is (`JocConfiguration`).
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub hostname: String,
    /// `Paths.get(user.dir).toString()`.
    pub data_directory: String,
    pub member_id: String,
    pub properties: JocProperties,
    /// JOC_INSTANCES.URI: this stand-in's HTTP URL.
    pub uri: Option<String>,
}

impl MemberConfig {
    pub fn new(
        hostname: &str,
        data_dir: &str,
        properties: JocProperties,
        uri: Option<String>,
    ) -> Self {
        let data_directory = java_path_string(data_dir);
        MemberConfig {
            hostname: hostname.to_owned(),
            member_id: member_id(hostname, &data_directory),
            data_directory,
            properties,
            uri,
        }
    }

    pub fn api_server(&self) -> bool {
        self.properties.is_api_server()
    }

    /// `JocConfiguration`: `title = isEmpty(jocTitle) ? hostname : jocTitle`, truncated to 30.
    pub fn title(&self) -> String {
        truncate(
            self.properties.title.as_deref().unwrap_or(&self.hostname),
            30,
        )
    }

    /// `JocCluster.getJocId`: `clusterId + "#" + ordering`.
    pub fn joc_id(&self) -> String {
        format!(
            "{}#{}",
            self.properties.cluster_id, self.properties.ordering
        )
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The stand-in's "active member services": a flag, a log line per change,
/// and optionally a periods file (JSON lines `{"member","event":"active"|"standby","mono_ns"}`,
/// CLOCK_MONOTONIC, the format of `standin-cockpit`).
pub struct Services {
    member: String,
    active: bool,
    periods: Option<std::fs::File>,
}

impl Services {
    pub fn new(member: &str, periods_file: Option<&Path>) -> Result<Services> {
        let periods = match periods_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening periods file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Services {
            member: member.to_owned(),
            active: false,
            periods,
        })
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    fn set(&mut self, active: bool, why: &str) {
        if self.active == active {
            return;
        }
        self.active = active;
        let event = if active { "active" } else { "standby" };
        tracing::info!(member = %self.member, "[services][{}]{why}", if active { "start" } else { "stop" });
        if let Some(file) = &mut self.periods {
            let line = serde_json::json!({
                "member": self.member,
                "event": event,
                "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
            });
            let _ = writeln!(file, "{line}");
        }
    }
}

/// How a `switch_member` request ended when it was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchState {
    /// `JocClusterState.ALREADY_STARTED`: the target is already active.
    AlreadyStarted,
    /// `JocClusterState.SWITCH`: accepted (possibly without a write; see facts §4).
    Switch,
}

impl SwitchState {
    pub fn name(&self) -> &'static str {
        match self {
            SwitchState::AlreadyStarted => "ALREADY_STARTED",
            SwitchState::Switch => "SWITCH",
        }
    }
}

/// Why `switch_member` failed.
#[derive(Debug)]
pub enum SwitchError {
    /// JOC's refusal text.
    Refused(String),
    /// The database failed.
    Database(anyhow::Error),
}

impl From<anyhow::Error> for SwitchError {
    fn from(e: anyhow::Error) -> Self {
        SwitchError::Database(e)
    }
}

/// One JOC instance's cluster service (`JocCluster` + `JocInstance`).
pub struct Member {
    pub config: MemberConfig,
    url: String,
    dialect: Dialect,
    conn: Option<AnyConnection>,
    pub services: Services,
}

impl Member {
    pub fn new(config: MemberConfig, url: &str, services: Services) -> Result<Member> {
        Ok(Member {
            dialect: Dialect::of_url(url)?,
            url: url.to_owned(),
            config,
            conn: None,
            services,
        })
    }

    fn me(&self) -> &str {
        &self.config.member_id
    }

    fn exceeded(&self, now: i64, hb: Option<i64>) -> bool {
        is_heart_beat_exceeded(
            now,
            hb,
            self.config.properties.heart_beat_exceeded_interval_s,
        )
    }

    /// Takes the connection out (reconnecting if needed); a failed or
    /// cancelled operation drops it, so the next one reconnects.
    async fn take_conn(&mut self) -> Result<AnyConnection> {
        match self.conn.take() {
            Some(c) => Ok(c),
            None => connect(&self.url).await,
        }
    }

    async fn with_conn<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut AnyConnection, Dialect) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.take_conn().await?;
        let result = f(&mut conn, self.dialect).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// Start-up (`JocClusterService.start`): `JocInstance.getInstance` registers
    /// or refreshes the JOC_INSTANCES row, then `tryDeleteActiveCurrentMember`.
    pub async fn start(&mut self) -> Result<()> {
        self.register_instance().await?;
        let deleted = self.try_delete_active_current_member().await?;
        if deleted > 0 {
            tracing::info!("[start][deleted own JOC_CLUSTER row left from a previous run]");
        }
        Ok(())
    }

    /// `JocInstance.getInstance`: insert the row if missing, else update it
    /// (all but DATA_DIRECTORY/OS_ID). OS_ID is 0: the stand-in has no
    /// INV_OPERATING_SYSTEMS table (ours).
    async fn register_instance(&mut self) -> Result<()> {
        let c = self.config.clone();
        let api = i64::from(c.api_server());
        let title = c.title();
        let version = truncate(STANDIN_VERSION, 30);
        self.with_conn(async move |conn, d| {
            let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql(
                d,
                &format!(r#"SELECT {} FROM JOC_INSTANCES WHERE "MEMBER_ID" = ?"#, int(d, "\"ID\"")),
            )))
            .bind(&c.member_id)
            .fetch_optional(&mut *conn)
            .await?;
            let now = now_utc(d);
            if exists.is_none() {
                let q = sql(
                    d,
                    &format!(
                        r#"INSERT INTO JOC_INSTANCES ("CLUSTER_ID", "MEMBER_ID", "OS_ID", "DATA_DIRECTORY", "SECURITY_LEVEL", "TIMEZONE", "STARTED_AT", "TITLE", "ORDERING", "URI", "HEART_BEAT", "API_SERVER", "VERSION") VALUES (?, ?, 0, ?, 'LOW', 'UTC', {now}, ?, ?, ?, {now}, ?, ?)"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(&c.properties.cluster_id)
                    .bind(&c.member_id)
                    .bind(&c.data_directory)
                    .bind(&title)
                    .bind(i64::from(c.properties.ordering))
                    .bind(c.uri.clone())
                    .bind(api)
                    .bind(&version)
                    .execute(&mut *conn)
                    .await
                    .context("inserting the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][inserted]");
            } else {
                let q = sql(
                    d,
                    &format!(
                        r#"UPDATE JOC_INSTANCES SET "CLUSTER_ID" = ?, "SECURITY_LEVEL" = 'LOW', "TIMEZONE" = 'UTC', "STARTED_AT" = {now}, "TITLE" = ?, "ORDERING" = ?, "URI" = ?, "HEART_BEAT" = {now}, "API_SERVER" = ?, "VERSION" = ? WHERE "MEMBER_ID" = ?"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(&c.properties.cluster_id)
                    .bind(&title)
                    .bind(i64::from(c.properties.ordering))
                    .bind(c.uri.clone())
                    .bind(api)
                    .bind(&version)
                    .bind(&c.member_id)
                    .execute(&mut *conn)
                    .await
                    .context("updating the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][updated]");
            }
            Ok(())
        })
        .await
    }

    /// `DBLayerJocCluster.deleteCluster(currentMemberId, true)`:
    /// `delete from DBItemJocCluster where memberId=:memberId and switchMemberId is null`.
    pub async fn try_delete_active_current_member(&mut self) -> Result<u64> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                r#"DELETE FROM JOC_CLUSTER WHERE "MEMBER_ID" = ? AND "SWITCH_MEMBER_ID" IS NULL"#,
            );
            Ok(sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("deleting the own JOC_CLUSTER row")?
                .rows_affected())
        })
        .await
    }

    async fn update_instance_heart_beat(&mut self) -> Result<()> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                    now_utc(d)
                ),
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("updating the instance heartbeat")?;
            Ok(())
        })
        .await
    }

    async fn get_cluster(&mut self) -> Result<Option<ClusterRow>> {
        self.with_conn(async |conn, d| read_cluster(conn, d).await)
            .await
    }

    async fn get_instance(&mut self, member_id: &str) -> Result<Option<Instance>> {
        let member_id = member_id.to_owned();
        self.with_conn(async move |conn, d| read_instance(conn, d, &member_id).await)
            .await
    }

    async fn db_now(&mut self) -> Result<i64> {
        self.with_conn(async |conn, d| {
            let q = format!("SELECT {}", epoch(d, now_utc(d)));
            Ok(sqlx::query_scalar(AssertSqlSafe(q))
                .fetch_one(&mut *conn)
                .await?)
        })
        .await
    }

    /// `INSERT` of a new `DBItemJocCluster` (id `cluster`, heartBeat now, memberId me).
    async fn insert_cluster(&mut self) -> Result<()> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"INSERT INTO JOC_CLUSTER ("ID", "MEMBER_ID", "HEART_BEAT") VALUES ('{CLUSTER_ROW_ID}', ?, {})"#,
                    now_utc(d)
                ),
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("inserting the JOC_CLUSTER row")?;
            Ok(())
        })
        .await
    }

    /// Hibernate `session.update(item)`: every column of the row written from
    /// the entity (last writer wins; the newest entity has no @Version).
    /// A vanished row is an error, as Hibernate's stale-state exception.
    async fn update_cluster(
        &mut self,
        member_id: &str,
        heart_beat: Ts,
        switch_member_id: Option<&str>,
        switch_heart_beat: Ts,
        row: &ClusterRow,
    ) -> Result<()> {
        let member_id = member_id.to_owned();
        let switch_member_id = switch_member_id.map(str::to_owned);
        let notification_member_id = row.notification_member_id.clone();
        let notification = row.notification.clone();
        self.with_conn(async move |conn, d| {
            let ts = |t: Ts| match t {
                Ts::Now => now_utc(d),
                Ts::Epoch(_) => from_epoch(d),
            };
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_CLUSTER SET "MEMBER_ID" = ?, "HEART_BEAT" = {}, "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {}, "NOTIFICATION_MEMBER_ID" = ?, "NOTIFICATION" = ? WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
                    ts(heart_beat),
                    ts(switch_heart_beat)
                ),
            );
            let mut query = sqlx::query(AssertSqlSafe(q)).bind(member_id);
            if let Ts::Epoch(v) = heart_beat {
                query = query.bind(v);
            }
            query = query.bind(switch_member_id);
            if let Ts::Epoch(v) = switch_heart_beat {
                query = query.bind(v);
            }
            let updated = query
                .bind(notification_member_id)
                .bind(notification)
                .execute(&mut *conn)
                .await
                .context("updating JOC_CLUSTER")?
                .rows_affected();
            if updated == 0 {
                // MySQL counts changed rows only; make sure the row is really gone.
                let present: i64 = sqlx::query_scalar(AssertSqlSafe(sql(
                    d,
                    &format!(r#"SELECT COUNT(*) FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}'"#),
                )))
                .fetch_one(&mut *conn)
                .await?;
                if present == 0 {
                    bail!("the JOC_CLUSTER row was deleted by another member meanwhile (stale state)");
                }
            }
            Ok(())
        })
        .await
    }

    /// One poll: `JocCluster.process` (facts §3.2).
    pub async fn process(&mut self) -> Result<()> {
        self.update_instance_heart_beat().await?;
        if self.config.api_server() {
            // API servers never touch JOC_CLUSTER and never run the services.
            return Ok(());
        }
        let item = self.get_cluster().await?;
        let (item, skip_perform) = self.handle_current_member_on_process(item).await?;
        if !skip_perform && let Some(item) = item {
            self.perform_active_member_services(&item.member_id);
        }
        Ok(())
    }

    /// `JocCluster.handleCurrentMemberOnProcess` (facts §3.3), with a cluster license.
    async fn handle_current_member_on_process(
        &mut self,
        item: Option<ClusterRow>,
    ) -> Result<(Option<ClusterRow>, bool)> {
        let me = self.me().to_owned();
        let mut item = item;
        if item.is_none() {
            match self.insert_cluster().await {
                Ok(()) => {
                    tracing::info!("[cluster][inserted JOC_CLUSTER row][memberId={me}]");
                    item = Some(ClusterRow {
                        member_id: me.clone(),
                        heart_beat: 0,
                        switch_member_id: None,
                        switch_heart_beat: None,
                        notification_member_id: None,
                        notification: None,
                        db_now: 0,
                    });
                }
                Err(error) => {
                    // SOSHibernateObjectOperationException: rollback, read again
                    // (a duplicate key means another member inserted first).
                    tracing::info!("[cluster][insert failed, reading again]{error:#}");
                    item = self.get_cluster().await?;
                }
            }
        }
        let Some(mut row) = item else {
            return Ok((None, false));
        };
        let mut skip_perform = false;
        if row.member_id == me {
            skip_perform = self.try_switch_active_member_on_process(&mut row).await?;
        } else if self.exceeded(row.db_now, Some(row.heart_beat)) {
            let mut update = true;
            // "to avoid start of the current instance if a switchMember defined"
            if let Some(switch) = row.switch_member_id.clone()
                && switch != me
                && let Some(instance) = self.get_instance(&switch).await?
                && !self.exceeded(
                    instance.age_s + instance.heart_beat,
                    Some(instance.heart_beat),
                )
            {
                tracing::info!("[{me}][wait for switchMember]{switch}");
                update = false;
            }
            if update {
                tracing::info!(
                    "[cluster][takeover][previous memberId={}][db][UTC]heartBeat exceeded: now-heartBeat={}s > {}s",
                    row.member_id,
                    row.db_now - row.heart_beat,
                    self.config.properties.heart_beat_exceeded_interval_s
                );
                self.update_cluster(&me, Ts::Now, None, Ts::Epoch(None), &row)
                    .await?;
                row.member_id = me.clone();
                row.switch_member_id = None;
                row.switch_heart_beat = None;
            }
        } else {
            // inactiveMemberTryStopServices
            self.services.set(false, "[inactive member]");
        }
        Ok((Some(row), skip_perform))
    }

    /// `JocCluster.trySwitchActiveMemberOnProcess` (facts §3.4); returns skipPerform.
    async fn try_switch_active_member_on_process(&mut self, row: &mut ClusterRow) -> Result<bool> {
        let me = self.me().to_owned();
        let Some(switch) = row.switch_member_id.clone() else {
            // The normal heartbeat of the active member.
            self.update_cluster(
                &me,
                Ts::Now,
                None,
                Ts::Epoch(row.switch_heart_beat),
                &row.clone(),
            )
            .await?;
            return Ok(false);
        };
        if switch == me {
            // I am the switch target and now active: clear the switch fields.
            tracing::info!("[switch][completed][memberId={me}]");
            self.update_cluster(&me, Ts::Now, None, Ts::Epoch(None), &row.clone())
                .await?;
            row.switch_member_id = None;
            row.switch_heart_beat = None;
            return Ok(false);
        }
        let now = self.db_now().await?;
        let mut skip_perform = false;
        let mut new_member = me.clone();
        if self.exceeded(now, row.switch_heart_beat) {
            tracing::info!(
                "[switch][skip][newMemberId={switch}][db][UTC]switchHeartBeat={:?} exceeded",
                row.switch_heart_beat
            );
        } else {
            self.services.set(false, "[switch to another member]");
            new_member = switch.clone();
            skip_perform = true;
            tracing::info!("[switch][handing over][newMemberId={switch}]");
        }
        // item.setSwitchMemberId(null) is commented out in JOC: the switch fields stay.
        self.update_cluster(
            &new_member,
            Ts::Now,
            Some(&switch),
            Ts::Epoch(row.switch_heart_beat),
            &row.clone(),
        )
        .await?;
        row.member_id = new_member;
        Ok(skip_perform)
    }

    /// `JocCluster.performActiveMemberServices`.
    fn perform_active_member_services(&mut self, member_id: &str) {
        let active = member_id == self.me();
        self.services.set(
            active,
            if active {
                "[active member]"
            } else {
                "[not the active member]"
            },
        );
    }

    /// REST `joc/cluster/switch_member` (`ClusterResourceImpl` →
    /// `JocCluster.switchMember`/`setSwitchMember`, facts §4). The order of the
    /// checks is ours where the facts do not fix it.
    pub async fn switch_member(
        &mut self,
        new_member_id: Option<&str>,
    ) -> Result<SwitchState, SwitchError> {
        const MODE: &str = "manual_switchover";
        let Some(new) = new_member_id.filter(|s| !s.is_empty()).map(str::to_owned) else {
            return Err(SwitchError::Refused("missing newMemberId".to_owned()));
        };
        let me = self.me().to_owned();
        if self.config.api_server() && new == me {
            return Err(SwitchError::Refused(format!(
                "[{MODE}][{}]{MSG_SWITCH_TO_API_SERVER}",
                self.config.title()
            )));
        }
        let target = self.get_instance(&new).await?;
        if let Some(target) = &target
            && target.api_server
        {
            return Err(SwitchError::Refused(format!(
                "[{MODE}][{}]{MSG_SWITCH_TO_API_SERVER}",
                target.display_name()
            )));
        }
        // License: assumed present (ClusterModeResult.use = true).
        let Some(row) = self.get_cluster().await? else {
            return Err(SwitchError::Refused("db cluster not found".to_owned()));
        };
        if row.member_id == new {
            return Ok(SwitchState::AlreadyStarted);
        }
        let Some(target) = target else {
            // JOC only logs this; the error answer is commented out.
            tracing::info!("[{MODE}][memberId={new}]JocInstance not found");
            return Ok(SwitchState::Switch);
        };
        if self.exceeded(target.heart_beat + target.age_s, Some(target.heart_beat)) {
            tracing::info!(
                "[{MODE}][memberId={new}][db][UTC]heartBeat={} exceeded",
                target.heart_beat
            );
            return Ok(SwitchState::Switch);
        }
        if row.member_id == me {
            // Receiving JOC is active: stop own services, hand over at once.
            self.services
                .set(false, "[switch_member to another member]");
            self.update_cluster(&new, Ts::Now, Some(&new), Ts::Now, &row)
                .await?;
            tracing::info!("[{MODE}][handed over][newMemberId={new}]");
        } else if row.switch_member_id.as_deref() != Some(new.as_str()) {
            // Not active: ask the active to hand over at its next poll.
            self.update_cluster(&row.member_id, Ts::Now, Some(&new), Ts::Now, &row)
                .await?;
            tracing::info!(
                "[{MODE}][requested][newMemberId={new}][active={}]",
                row.member_id
            );
        }
        Ok(SwitchState::Switch)
    }

    /// Clean shutdown (`JocClusterService.stop(…, deleteActiveCurrentMember=true, …)`):
    /// stop the services, then `tryDeleteActiveCurrentMember`. The instance row stays.
    pub async fn shutdown(&mut self) -> Result<u64> {
        self.services.set(false, "[shutdown]");
        self.try_delete_active_current_member().await
    }

    /// Whether this member's services run.
    pub fn services_active(&self) -> bool {
        self.services.is_active()
    }
}

/// The stand-in's data directory default: the current directory (`user.dir`).
pub fn default_data_dir() -> Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

/// Polling intervals as Durations.
pub fn polling(props: &JocProperties) -> (Duration, Duration) {
    (
        Duration::from_secs(props.polling_interval_s),
        Duration::from_secs(props.polling_wait_interval_on_error_s),
    )
}
