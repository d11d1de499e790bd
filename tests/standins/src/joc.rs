//! A faithful stand-in for JOC Cockpit's own cluster service (the
//! `JOC_CLUSTER` / `JOC_INSTANCES` protocol), for end-to-end tests and the
//! demo. The specification is docs/joc-facts.md, gathered from SOS's public
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
use std::sync::Arc;
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
/// `JocConfiguration`, `Globals.getOrdering`, `DbInstaller`), with JOC's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JocProperties {
    /// `cluster_polling_interval`, seconds, default 30.
    pub polling_interval_s: u64,
    /// `cluster_heart_beat_exceeded_interval`, seconds, default 60.
    pub heart_beat_exceeded_interval_s: u64,
    /// `cluster_polling_wait_interval_on_error`, seconds, default 2.
    pub polling_wait_interval_on_error_s: u64,
    /// `cluster_id`. Ignored by JOC since 2.5.4 (JOC-1504: the code reading it
    /// in `sos-webservices-joc-global/.../joc/Globals.java` `getClusterId` is
    /// commented out; the id is `api` or `joc` from joc-settings.properties).
    /// Only the legacy layout reads it (see [`JocProperties::legacy_api_server`]).
    pub cluster_id: Option<String>,
    /// `title`, default: the hostname.
    pub title: Option<String>,
    /// `ordering` as written (`Globals.getOrdering`: default -1, and anything
    /// outside 0–99 makes JOC refuse to start; see [`JocProperties::checked_ordering`]).
    pub ordering: Option<i64>,
    /// `create_db_tables` (`DbInstaller.createTables`: `getProperty("create_db_tables", false)`).
    pub create_db_tables: bool,
    /// `hibernate_configuration_file`, relative to joc.properties' folder; default `hibernate.cfg.xml`.
    pub hibernate_configuration_file: String,
}

impl Default for JocProperties {
    fn default() -> Self {
        JocProperties {
            polling_interval_s: 30,
            heart_beat_exceeded_interval_s: 60,
            polling_wait_interval_on_error_s: 2,
            cluster_id: None,
            title: None,
            ordering: None,
            create_db_tables: false,
            hibernate_configuration_file: "hibernate.cfg.xml".to_owned(),
        }
    }
}

/// JOC's refusal when `ordering` is missing or out of range
/// (`sos-webservices-joc-global/.../joc/Globals.java` `getOrdering`, thrown as a
/// `JocConfigurationException` from the servlet's init; our wording follows JOC's).
pub const MSG_ORDERING: &str =
    "The 'ordering' setting in the joc.properties file must have an integer value from 0 to 99.";

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
        props.cluster_id = map
            .get("cluster_id")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        props.title = map
            .get("title")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        // An unparsable ordering is JOC's -1 (Integer.valueOf of the property
        // fails at start: refused either way).
        props.ordering = map
            .get("ordering")
            .map(|v| v.trim().parse::<i64>().unwrap_or(-1));
        // SOS's properties helper reads booleans as "true" (case-insensitive) (ours: exact helper not looked up).
        props.create_db_tables = map
            .get("create_db_tables")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if let Some(file) = map
            .get("hibernate_configuration_file")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            props.hibernate_configuration_file = file.to_owned();
        }
        Ok(props)
    }

    /// `Globals.getOrdering`: an integer 0–99, else JOC refuses to start.
    pub fn checked_ordering(&self) -> std::result::Result<i32, String> {
        match self.ordering {
            Some(o) if (0..=99).contains(&o) => Ok(o as i32),
            _ => Err(MSG_ORDERING.to_owned()),
        }
    }

    /// LEGACY LAYOUT ONLY (remove with `--resources-dir`): the old operator
    /// layout marked API servers by `cluster_id = api`, which JOC ignores.
    pub fn legacy_api_server(&self) -> bool {
        self.cluster_id.as_deref() == Some("api")
    }
}

/// `security_level` of joc-settings.properties (`JocSecurityLevel`: LOW=0,
/// MEDIUM=1, HIGH=2; INV_JS_INSTANCES.SECURITY_LEVEL holds the number,
/// JOC_INSTANCES.SECURITY_LEVEL the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityLevel {
    #[default]
    Low,
    Medium,
    High,
}

impl SecurityLevel {
    pub fn name(self) -> &'static str {
        match self {
            SecurityLevel::Low => "LOW",
            SecurityLevel::Medium => "MEDIUM",
            SecurityLevel::High => "HIGH",
        }
    }

    pub fn int_value(self) -> i64 {
        match self {
            SecurityLevel::Low => 0,
            SecurityLevel::Medium => 1,
            SecurityLevel::High => 2,
        }
    }
}

/// The classpath file `/joc-settings.properties` (in the image
/// `webapps/joc/WEB-INF/classes/joc-settings.properties`), read by
/// `sos-webservices-joc-global/.../joc/Globals.java` `getJocSecurityLevel`:
/// `as_api_server` is "yes" exactly for an API server (default "no"),
/// `security_level` upper-cased, an unknown value or a missing file is LOW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JocSettings {
    pub api_server: bool,
    pub security_level: SecurityLevel,
}

impl JocSettings {
    pub fn parse(text: &str) -> JocSettings {
        let map = parse_java_properties(text);
        let security_level = match map
            .get("security_level")
            .map(|s| s.to_uppercase())
            .as_deref()
        {
            Some("MEDIUM") => SecurityLevel::Medium,
            Some("HIGH") => SecurityLevel::High,
            _ => SecurityLevel::Low,
        };
        JocSettings {
            // `properties.getProperty("as_api_server", "no").equals("yes")`: exact, untrimmed.
            api_server: map.get("as_api_server").is_some_and(|v| v == "yes"),
            security_level,
        }
    }

    /// Missing file: JOC's defaults (member, LOW).
    pub fn read(path: &Path) -> Result<JocSettings> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(JocSettings::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JocSettings::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
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

/// joc.properties for tests in the LEGACY layout: the two cluster timings and
/// `cluster_id` (`"joc"` for a cluster member, `"api"` for an API server), no ordering.
pub fn render_joc_properties(poll_s: u64, timeout_s: u64, cluster_id: &str) -> String {
    format!(
        "# written by joc_ha_standins::joc\n\
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
const POSTGRES_DDL: [&str; 9] = [
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
    // The tables JOC's cluster service reads besides its own (docs/joc-facts.md fact 5):
    // columns from SOS's entities `sos-joc/sos-joc-db/src/main/java/com/sos/joc/db/
    // inventory/DBItemInventoryOperatingSystem.java`, `.../joc/DBItemJocConfiguration.java`
    // and `.../inventory/DBItemInventoryJSInstance.java` (names, nullability, unique
    // keys, sequences from `DBLayer.java`), only those the stand-in reads or must
    // fill; the column types are ours (SOS's SQL scripts ship with the installer,
    // not in that repository).
    "CREATE SEQUENCE IF NOT EXISTS SEQ_INV_OS INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    "ID"             BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_INV_OS'),
    "HOSTNAME"       VARCHAR(100)  NOT NULL,
    "NAME"           VARCHAR(30)   NOT NULL,
    "ARCHITECTURE"   VARCHAR(30)   NOT NULL,
    "DISTRIBUTION"   VARCHAR(255)  NOT NULL,
    "MODIFIED"       TIMESTAMP     NOT NULL,
    CONSTRAINT UNIQUE_IOS_HN UNIQUE ("HOSTNAME"),
    PRIMARY KEY ("ID")
)"#,
    "CREATE SEQUENCE IF NOT EXISTS SEQ_JOC_C INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    "ID"                  BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_JOC_C'),
    "INSTANCE_ID"         BIGINT        NOT NULL,
    "CONTROLLER_ID"       VARCHAR(100)  NULL,
    "ACCOUNT"             VARCHAR(255)  NOT NULL,
    "OBJECT_TYPE"         VARCHAR(30)   NOT NULL,
    "CONFIGURATION_TYPE"  VARCHAR(30)   NOT NULL,
    "NAME"                VARCHAR(255)  NULL,
    "SHARED"              NUMERIC(1)    NOT NULL,
    "CONFIGURATION_ITEM"  TEXT          NOT NULL,
    "MODIFIED"            TIMESTAMP     NOT NULL,
    PRIMARY KEY ("ID")
)"#,
    "CREATE SEQUENCE IF NOT EXISTS SEQ_INV_JI INCREMENT BY 1 START WITH 1 MINVALUE 1 CYCLE",
    r#"CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    "ID"             BIGINT        NOT NULL DEFAULT NEXTVAL('SEQ_INV_JI'),
    "CONTROLLER_ID"  VARCHAR(100)  NOT NULL,
    "SECURITY_LEVEL" SMALLINT      NOT NULL,
    "URI"            VARCHAR(255)  NOT NULL,
    "CLUSTER_URI"    VARCHAR(255)  NOT NULL,
    "OS_ID"          BIGINT        NOT NULL,
    "IS_CLUSTER"     NUMERIC(1)    NOT NULL,
    "IS_PRIMARY"     NUMERIC(1)    NOT NULL,
    "MODIFIED"       TIMESTAMP     NOT NULL,
    CONSTRAINT UNIQUE_IJI_SLU UNIQUE ("SECURITY_LEVEL", "URI"),
    PRIMARY KEY ("ID")
)"#,
];

/// MySQL/MariaDB DDL: OURS. SOS's MySQL script was NOT FOUND; this is the
/// PostgreSQL script translated: TIMESTAMP → DATETIME (whole seconds, as JOC's
/// times are compared in whole seconds; DATETIME has no time zone conversion,
/// unlike MySQL's TIMESTAMP), the sequence → AUTO_INCREMENT, NUMERIC(1) → TINYINT.
const MYSQL_DDL: [&str; 5] = [
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
    // INV_OPERATING_SYSTEMS, JOC_CONFIGURATIONS, INV_JS_INSTANCES: see POSTGRES_DDL.
    "CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    `ID`             BIGINT        NOT NULL AUTO_INCREMENT,
    `HOSTNAME`       VARCHAR(100)  NOT NULL,
    `NAME`           VARCHAR(30)   NOT NULL,
    `ARCHITECTURE`   VARCHAR(30)   NOT NULL,
    `DISTRIBUTION`   VARCHAR(255)  NOT NULL,
    `MODIFIED`       DATETIME      NOT NULL,
    CONSTRAINT UNIQUE_IOS_HN UNIQUE (`HOSTNAME`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    `ID`                  BIGINT        NOT NULL AUTO_INCREMENT,
    `INSTANCE_ID`         BIGINT        NOT NULL,
    `CONTROLLER_ID`       VARCHAR(100)  NULL,
    `ACCOUNT`             VARCHAR(255)  NOT NULL,
    `OBJECT_TYPE`         VARCHAR(30)   NOT NULL,
    `CONFIGURATION_TYPE`  VARCHAR(30)   NOT NULL,
    `NAME`                VARCHAR(255)  NULL,
    `SHARED`              TINYINT       NOT NULL,
    `CONFIGURATION_ITEM`  LONGTEXT      NOT NULL,
    `MODIFIED`            DATETIME      NOT NULL,
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    `ID`             BIGINT        NOT NULL AUTO_INCREMENT,
    `CONTROLLER_ID`  VARCHAR(100)  NOT NULL,
    `SECURITY_LEVEL` SMALLINT      NOT NULL,
    `URI`            VARCHAR(255)  NOT NULL,
    `CLUSTER_URI`    VARCHAR(255)  NOT NULL,
    `OS_ID`          BIGINT        NOT NULL,
    `IS_CLUSTER`     TINYINT       NOT NULL,
    `IS_PRIMARY`     TINYINT       NOT NULL,
    `MODIFIED`       DATETIME      NOT NULL,
    CONSTRAINT UNIQUE_IJI_SLU UNIQUE (`SECURITY_LEVEL`, `URI`),
    PRIMARY KEY (`ID`)
) ENGINE=InnoDB",
];

/// SQLite DDL for the single-host demo: OURS (JOC has no SQLite support; H2
/// is its evaluation database). Times are TEXT 'YYYY-MM-DD HH:MM:SS' in UTC.
const SQLITE_DDL: [&str; 5] = [
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
    // INV_OPERATING_SYSTEMS, JOC_CONFIGURATIONS, INV_JS_INSTANCES: see POSTGRES_DDL.
    r#"CREATE TABLE IF NOT EXISTS INV_OPERATING_SYSTEMS (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "HOSTNAME"       VARCHAR(100)  NOT NULL UNIQUE,
    "NAME"           VARCHAR(30)   NOT NULL,
    "ARCHITECTURE"   VARCHAR(30)   NOT NULL,
    "DISTRIBUTION"   VARCHAR(255)  NOT NULL,
    "MODIFIED"       TEXT          NOT NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS JOC_CONFIGURATIONS (
    "ID"                  INTEGER PRIMARY KEY AUTOINCREMENT,
    "INSTANCE_ID"         BIGINT        NOT NULL,
    "CONTROLLER_ID"       VARCHAR(100)  NULL,
    "ACCOUNT"             VARCHAR(255)  NOT NULL,
    "OBJECT_TYPE"         VARCHAR(30)   NOT NULL,
    "CONFIGURATION_TYPE"  VARCHAR(30)   NOT NULL,
    "NAME"                VARCHAR(255)  NULL,
    "SHARED"              NUMERIC(1)    NOT NULL,
    "CONFIGURATION_ITEM"  TEXT          NOT NULL,
    "MODIFIED"            TEXT          NOT NULL
)"#,
    r#"CREATE TABLE IF NOT EXISTS INV_JS_INSTANCES (
    "ID"             INTEGER PRIMARY KEY AUTOINCREMENT,
    "CONTROLLER_ID"  VARCHAR(100)  NOT NULL,
    "SECURITY_LEVEL" SMALLINT      NOT NULL,
    "URI"            VARCHAR(255)  NOT NULL,
    "CLUSTER_URI"    VARCHAR(255)  NOT NULL,
    "OS_ID"          BIGINT        NOT NULL,
    "IS_CLUSTER"     NUMERIC(1)    NOT NULL,
    "IS_PRIMARY"     NUMERIC(1)    NOT NULL,
    "MODIFIED"       TEXT          NOT NULL,
    UNIQUE ("SECURITY_LEVEL", "URI")
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
pub use crate::history::connect;

/// Creates JOC's tables (JOC_INSTANCES, JOC_CLUSTER and the three the cluster
/// service reads) if missing, as JOC's `DbInstaller` does with
/// `create_db_tables = true`. Idempotent; safe when several stand-ins start at
/// once (PostgreSQL serialises on an advisory lock, since concurrent
/// `CREATE … IF NOT EXISTS` can collide there).
pub async fn create_schema(url: &str) -> Result<()> {
    run_ddl(url, |_| true).await
}

async fn run_ddl(url: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
    let dialect = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let mut tx = conn.begin().await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7297631142)")
            .execute(&mut *tx)
            .await?;
    }
    for statement in ddl(dialect).into_iter().filter(|s| keep(s)) {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .context("creating JOC's tables")?;
    }
    tx.commit().await?;
    Ok(())
}

/// Registers a Controller the way JOC's GUI does at the first login (an
/// `INV_JS_INSTANCES` row, `DBItemInventoryJSInstance`): after it JOC's
/// active member stops waiting in `readCurrentDbInfos` (docs/joc-facts.md fact 9). For
/// tests; creates INV_JS_INSTANCES if it is missing (JOC would have created it
/// at its first start) and nothing else.
pub async fn register_controller(
    url: &str,
    controller_id: &str,
    controller_uri: &str,
    security_level: SecurityLevel,
) -> Result<()> {
    run_ddl(url, |s| {
        s.contains("INV_JS_INSTANCES") || s.contains("SEQ_INV_JI")
    })
    .await?;
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO INV_JS_INSTANCES ("CONTROLLER_ID", "SECURITY_LEVEL", "URI", "CLUSTER_URI", "OS_ID", "IS_CLUSTER", "IS_PRIMARY", "MODIFIED") VALUES (?, ?, ?, ?, 0, 0, 1, {})"#,
            now_utc(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(controller_id)
        .bind(security_level.int_value())
        .bind(controller_uri)
        .bind(controller_uri)
        .execute(&mut conn)
        .await
        .context("inserting the INV_JS_INSTANCES row")?;
    Ok(())
}

/// `readCurrentDbInfoControllers` in `sos-joc/sos-joc-cluster/.../cluster/JocCluster.java`:
/// the Controllers of JOC's security level (`where securityLevel = :level`).
async fn count_controllers(
    conn: &mut AnyConnection,
    d: Dialect,
    level: SecurityLevel,
) -> Result<i64> {
    let q = sql(
        d,
        r#"SELECT COUNT(*) FROM INV_JS_INSTANCES WHERE "SECURITY_LEVEL" = ?"#,
    );
    sqlx::query_scalar(AssertSqlSafe(q))
        .bind(level.int_value())
        .fetch_one(&mut *conn)
        .await
        .context("reading INV_JS_INSTANCES")
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
    /// OS_ID: the INV_OPERATING_SYSTEMS row of the host.
    pub os_id: i64,
    pub security_level: String,
    /// TIMEZONE: the JVM's zone.
    pub timezone: String,
    /// STARTED_AT, epoch seconds (written from the JVM's clock).
    pub started_at: i64,
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
    i64,
    String,
    String,
    i64,
);

fn instance_select(d: Dialect) -> String {
    format!(
        r#"SELECT "MEMBER_ID", "CLUSTER_ID", "DATA_DIRECTORY", "TITLE", {}, "URI", {}, "VERSION", {}, {}, {}, "SECURITY_LEVEL", "TIMEZONE", {} FROM JOC_INSTANCES"#,
        int(d, "\"ORDERING\""),
        int(d, "\"API_SERVER\""),
        epoch(d, "\"HEART_BEAT\""),
        epoch(d, now_utc(d)),
        int(d, "\"OS_ID\""),
        epoch(d, "\"STARTED_AT\""),
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
        os_id: r.10,
        security_level: r.11,
        timezone: r.12,
        started_at: r.13,
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

/// Writes a switch request into JOC_CLUSTER as the sidecar does
/// (SWITCH_MEMBER_ID and SWITCH_HEART_BEAT), the heartbeat `age_s` seconds
/// old by database time. For tests.
pub async fn write_switch_request(url: &str, target: &str, age_s: i64) -> Result<u64> {
    let d = Dialect::of_url(url)?;
    let now = db_now(url).await?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"UPDATE JOC_CLUSTER SET "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {} WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
            from_epoch(d)
        ),
    );
    Ok(sqlx::query(AssertSqlSafe(q))
        .bind(target)
        .bind(now - age_s)
        .execute(&mut conn)
        .await
        .context("writing the switch request")?
        .rows_affected())
}

/// Inserts a second JOC_CLUSTER row (id `id`, heartbeat 2000-01-01) that JOC
/// never reads: a witness of updates without WHERE (docs/joc-facts.md fact 16). For tests.
pub async fn insert_witness_cluster_row(url: &str, id: &str) -> Result<()> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO JOC_CLUSTER ("ID", "MEMBER_ID", "HEART_BEAT") VALUES (?, ?, {})"#,
            from_epoch(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(id)
        .bind(format!("{id}:0"))
        .bind(946_684_800_i64)
        .execute(&mut conn)
        .await
        .context("inserting the witness row")?;
    Ok(())
}

/// HEART_BEAT of the JOC_CLUSTER row `id`, epoch seconds.
pub async fn cluster_heart_beat_of(url: &str, id: &str) -> Result<Option<i64>> {
    let d = Dialect::of_url(url)?;
    let mut conn = connect(url).await?;
    let q = sql(
        d,
        &format!(
            r#"SELECT {} FROM JOC_CLUSTER WHERE "ID" = ?"#,
            epoch(d, "\"HEART_BEAT\"")
        ),
    );
    Ok(sqlx::query_scalar(AssertSqlSafe(q))
        .bind(id)
        .fetch_optional(&mut conn)
        .await?)
}

/// Holds a row lock on JOC_CLUSTER's row (`SELECT … FOR UPDATE` in an open
/// transaction) until [`ClusterRowLock::write_request_and_commit`]: a
/// member's UPDATE blocks meanwhile, after its read. For the rewrite race
/// (docs/joc-facts.md fact 15) in tests.
pub struct ClusterRowLock {
    conn: AnyConnection,
    dialect: Dialect,
}

impl ClusterRowLock {
    pub async fn take(url: &str) -> Result<ClusterRowLock> {
        let dialect = Dialect::of_url(url)?;
        let mut conn = connect(url).await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        sqlx::query(AssertSqlSafe(sql(
            dialect,
            &format!(
                r#"SELECT "MEMBER_ID" FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}' FOR UPDATE"#
            ),
        )))
        .fetch_optional(&mut conn)
        .await
        .context("locking the JOC_CLUSTER row")?;
        Ok(ClusterRowLock { conn, dialect })
    }

    /// Writes a fresh switch request to `target` in the locked transaction
    /// and commits; returns the rows the UPDATE changed (1: it succeeded).
    pub async fn write_request_and_commit(mut self, target: &str) -> Result<u64> {
        let d = self.dialect;
        let q = sql(
            d,
            &format!(
                r#"UPDATE JOC_CLUSTER SET "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {} WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
                now_utc(d)
            ),
        );
        let changed = sqlx::query(AssertSqlSafe(q))
            .bind(target)
            .execute(&mut self.conn)
            .await
            .context("writing the switch request")?
            .rows_affected();
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        Ok(changed)
    }
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
//
// Files cited below, in `sos-berlin/sos-components` (master; the same rules on
// release/2.7 and release/2.8 unless said):
// JC  = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/JocCluster.java
// AMH = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/JocClusterActiveMemberHandler.java
// JCC = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/configuration/JocClusterConfiguration.java
// DBL = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/db/DBLayerJocCluster.java
// JI  = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/instances/JocInstance.java
// CI  = sos-webservices/sos-webservices-joc-global/src/main/java/com/sos/joc/db/cluster/CheckInstance.java

/// A timestamp to write: the database's UTC now, or a value read earlier.
#[derive(Debug, Clone, Copy)]
enum Ts {
    Now,
    Epoch(Option<i64>),
}

/// JOC's `StartupMode` as far as the cluster loop uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    Automatic,
    Failover,
    ManualSwitchover,
}

impl StartupMode {
    pub fn name(self) -> &'static str {
        match self {
            StartupMode::Automatic => "automatic",
            StartupMode::Failover => "failover",
            StartupMode::ManualSwitchover => "manual_switchover",
        }
    }
}

/// Whether JOC holds a cluster license (`JCC.clusterMode`: the licensed
/// class from `js7-license.jar` loads, and says "use").
#[derive(Debug, Clone)]
pub enum License {
    /// LEGACY LAYOUT ONLY (remove with `--resources-dir`): assumed present.
    Assumed,
    /// Licensed iff this file exists: `<JETTY_BASE>/lib/ext/joc/js7-license.jar`,
    /// which the image's entrypoint copies there only when
    /// `resources/joc/license` exists (docs/joc-facts.md fact 3, 10). Looked at on every re-read.
    Jar(PathBuf),
}

impl License {
    pub fn present(&self) -> bool {
        match self {
            License::Assumed => true,
            License::Jar(path) => path.is_file(),
        }
    }
}

/// Who this stand-in is (`JocConfiguration`, `Globals`).
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub hostname: String,
    /// `Paths.get(user.dir).toString()`.
    pub data_directory: String,
    pub member_id: String,
    pub properties: JocProperties,
    /// From joc-settings.properties (docs/joc-facts.md fact 1); legacy: `cluster_id = api`.
    pub api_server: bool,
    /// `ordering`, checked (0–99) before the member is built.
    pub ordering: i32,
    pub security_level: SecurityLevel,
    pub license: License,
    /// How long `readCurrentDbInfos` sleeps when no Controller is registered:
    /// JOC's is 1 min (JC `waitFor(60)`); tests may shorten it.
    pub controllers_retry: Duration,
    /// The JVM's start, epoch seconds by the process clock (JOC_INSTANCES.STARTED_AT, docs/joc-facts.md fact 18).
    pub started_at_s: i64,
    /// The JVM's time zone (JOC_INSTANCES.TIMEZONE).
    pub timezone: String,
}

impl MemberConfig {
    pub fn new(
        hostname: &str,
        data_dir: &str,
        properties: JocProperties,
        settings: JocSettings,
        ordering: i32,
        license: License,
    ) -> Self {
        let data_directory = java_path_string(data_dir);
        MemberConfig {
            hostname: hostname.to_owned(),
            member_id: member_id(hostname, &data_directory),
            data_directory,
            properties,
            api_server: settings.api_server,
            ordering,
            security_level: settings.security_level,
            license,
            controllers_retry: Duration::from_secs(60),
            started_at_s: jiff::Timestamp::now().as_second(),
            timezone: jvm_time_zone(),
        }
    }

    pub fn api_server(&self) -> bool {
        self.api_server
    }

    /// `Globals.getClusterId`: `api` for an API server, else `joc`.
    pub fn cluster_id(&self) -> &'static str {
        if self.api_server { "api" } else { "joc" }
    }

    /// `JocConfiguration`: `title = isEmpty(jocTitle) ? hostname : jocTitle`, truncated to 30.
    pub fn title(&self) -> String {
        truncate(
            self.properties.title.as_deref().unwrap_or(&self.hostname),
            30,
        )
    }

    /// `Globals.getJocId`: `clusterId + "#" + ordering`.
    pub fn joc_id(&self) -> String {
        format!("{}#{}", self.cluster_id(), self.ordering)
    }
}

/// The JVM's default zone: `TZ` if set, else UTC (ours: the JVM also reads /etc/localtime).
fn jvm_time_zone() -> String {
    std::env::var("TZ")
        .ok()
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "Etc/UTC".to_owned())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The stand-in's "active member services": a flag, a log line per change,
/// and optionally a periods file (JSON lines
/// `{"member","event":"start"|"stop","mono_ns"}`, CLOCK_MONOTONIC), shared by
/// the cluster loop and the REST handler (AMH's `active`).
#[derive(Clone)]
pub struct Services(Arc<std::sync::Mutex<ServicesState>>);

struct ServicesState {
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
        Ok(Services(Arc::new(std::sync::Mutex::new(ServicesState {
            member: member.to_owned(),
            active: false,
            periods,
        }))))
    }

    pub fn is_active(&self) -> bool {
        self.0.lock().map(|s| s.active).unwrap_or(false)
    }

    fn set(&self, active: bool, why: &str) {
        let Ok(mut state) = self.0.lock() else { return };
        if state.active == active {
            return;
        }
        state.active = active;
        let event = if active { "start" } else { "stop" };
        tracing::info!(member = %state.member, "[services][{event}]{why}");
        let line = serde_json::json!({
            "member": state.member,
            "event": event,
            "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
            "pid": std::process::id(),
        });
        if let Some(file) = &mut state.periods {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Appends one record to a periods file (the format [`Services`] writes),
/// for an end the stand-in's services cannot record themselves: the JVM
/// killed inside the container, or the whole process killed by the harness.
pub fn append_period_record(path: &Path, member: &str, event: &str) -> Result<()> {
    let line = serde_json::json!({
        "member": member,
        "event": event,
        "mono_ns": joc_ha_sidecar::role::monotonic_now_ns(),
        "pid": std::process::id(),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening periods file {}", path.display()))?;
    writeln!(file, "{line}")?;
    Ok(())
}

/// How a `switch_member` request ended when it was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchState {
    /// `JocClusterState.ALREADY_STARTED`: the target is already active.
    AlreadyStarted,
    /// `JocClusterState.SWITCH_MEMBER`: JC `setSwitchMember`'s answer, also
    /// when it skipped writing (unknown or stale target; docs/joc-facts.md fact 17).
    SwitchMember,
}

impl SwitchState {
    pub fn name(&self) -> &'static str {
        match self {
            SwitchState::AlreadyStarted => "ALREADY_STARTED",
            SwitchState::SwitchMember => "SWITCH_MEMBER",
        }
    }
}

/// Why `switch_member` failed.
#[derive(Debug)]
pub enum SwitchError {
    /// JOC's refusal text.
    Refused(String),
    /// `JocClusterState.MISSING_LICENSE` (JC `switchMember`).
    MissingLicense,
    /// The database failed (after JOC's retries).
    Database(anyhow::Error),
}

impl From<anyhow::Error> for SwitchError {
    fn from(e: anyhow::Error) -> Self {
        SwitchError::Database(e)
    }
}

/// What `perform` answered (`JocClusterState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Performed {
    Started,
    AlreadyStarted,
    Stopped,
    AlreadyStopped,
    /// A fail-over or switch-over start without a license (AMH).
    MissingLicense,
    /// Closed while waiting for a Controller.
    MissingControllers,
}

/// Waits `d`, or less when the JVM closes (JC `waitFor`).
async fn wait_for(closed: &mut tokio::sync::watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = closed.wait_for(|c| *c) => {}
    }
}

/// AMH: starts and stops the active member's services. Runs outside the
/// member's lock, as JOC's is its own monitor: the REST handler can act
/// while a start waits for a Controller.
#[derive(Clone)]
pub struct ActiveMemberHandler {
    url: String,
    dialect: Dialect,
    member_id: String,
    security_level: SecurityLevel,
    license: License,
    controllers_retry: Duration,
    services: Services,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl ActiveMemberHandler {
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// AMH `perform(mode, START|STOP)`.
    pub async fn perform(&self, mode: StartupMode, start: bool) -> Performed {
        tracing::info!(
            "[{}][perform][active={}]{}",
            mode.name(),
            self.services.is_active(),
            if start { "START" } else { "STOP" }
        );
        if start {
            if mode != StartupMode::Automatic {
                // JCC `rereadClusterMode` → `clusterMode`: when the licensed
                // class loads it sleeps 1 s before closing its class loader
                // (docs/joc-facts.md fact 11). A freeze here and a thaw later resume the
                // start, whoever is MEMBER_ID by then (docs/joc-facts.md fact 20).
                if self.license.present() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if self.services.is_active() {
                return Performed::AlreadyStarted;
            }
            if matches!(mode, StartupMode::ManualSwitchover | StartupMode::Failover)
                && !self.license.present()
            {
                // docs/joc-facts.md fact 10: a target without license refuses to start.
                tracing::error!("[{}][perform]MISSING_LICENSE", mode.name());
                return Performed::MissingLicense;
            }
        } else if !self.services.is_active() {
            return Performed::AlreadyStopped;
        }
        // JC `readCurrentDbInfos`: loops until a Controller of JOC's security
        // level is registered (docs/joc-facts.md fact 9). The poll that called this waits
        // with it: no heartbeats meanwhile.
        let found = self.read_current_db_infos().await;
        if start && !found {
            tracing::error!("[{}][perform]missing controllers", mode.name());
            return Performed::MissingControllers;
        }
        self.services
            .set(start, &format!("[{}][active member services]", mode.name()));
        // AMH `performServices`: `updateHeartBeat` after the services' start
        // or stop, retried twice (docs/joc-facts.md fact 16: every JOC_CLUSTER row, no WHERE).
        self.update_heart_beat(2).await;
        if start {
            Performed::Started
        } else {
            Performed::Stopped
        }
    }

    async fn read_current_db_infos(&self) -> bool {
        let mut closed = self.closed.clone();
        loop {
            if self.is_closed() {
                return false;
            }
            let counted = async {
                let mut conn = connect(&self.url).await?;
                count_controllers(&mut conn, self.dialect, self.security_level).await
            }
            .await;
            match counted {
                Ok(n) if n > 0 => return true,
                Ok(_) => tracing::info!(
                    "[{}]no controllers found. sleep {:?} and try again ...",
                    self.security_level.name(),
                    self.controllers_retry
                ),
                Err(error) => tracing::error!(
                    "[error occured][sleep {:?} and try again ...]{error:#}",
                    self.controllers_retry
                ),
            }
            wait_for(&mut closed, self.controllers_retry).await;
        }
    }

    /// JC `updateHeartBeat(mode, method, retryCount, log)`: DBL
    /// `updateClusterHeartBeat` (`update JOC_CLUSTER set HEART_BEAT`, with no
    /// WHERE, docs/joc-facts.md fact 16) and the own instance's heartbeat, one transaction;
    /// on error retried after 1 s.
    async fn update_heart_beat(&self, retries: u32) {
        let mut closed = self.closed.clone();
        let mut errors = 0;
        loop {
            let result = async {
                let d = self.dialect;
                let mut conn = connect(&self.url).await?;
                let mut tx = conn.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    r#"UPDATE JOC_CLUSTER SET {} = {}"#,
                    quote(d, "HEART_BEAT"),
                    now_utc(d)
                )))
                .execute(&mut *tx)
                .await?;
                sqlx::query(AssertSqlSafe(sql(
                    d,
                    &format!(
                        r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                        now_utc(d)
                    ),
                )))
                .bind(&self.member_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    errors += 1;
                    if errors > retries {
                        tracing::warn!("[updateHeartBeat]{error:#}");
                        return;
                    }
                    wait_for(&mut closed, Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn quote(d: Dialect, name: &str) -> String {
    match d {
        Dialect::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

/// JCC defaults for the switch-over retries on database errors:
/// `cluster_switch_member_wait_counter_on_error` 10 ×
/// `cluster_switch_member_wait_interval_on_error` 2 s (docs/joc-facts.md fact 17).
const SWITCH_RETRIES: u32 = 10;
const SWITCH_RETRY_WAIT: Duration = Duration::from_secs(2);

/// `CheckInstance` looks at liveness before the cluster service has read
/// joc.properties: `JocCluster.isHeartBeatExceeded` then falls back to the
/// default configuration, 60 s (JC `isHeartBeatExceeded`, JCC defaults;
/// ours: inferred from the order of the servlet's init).
const CHECK_INSTANCE_EXCEEDED_S: u64 = 60;

/// One JOC instance's cluster service (`JocCluster` + `JocInstance`).
pub struct Member {
    pub config: MemberConfig,
    url: String,
    dialect: Dialect,
    conn: Option<AnyConnection>,
    pub services: Services,
    amh: ActiveMemberHandler,
    closed: tokio::sync::watch::Receiver<bool>,
    first_run: bool,
    instance_processed: bool,
}

impl Member {
    /// `closed` turns true when the JVM shuts down (JC `close`).
    pub fn new(
        config: MemberConfig,
        url: &str,
        services: Services,
        closed: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Member> {
        let dialect = Dialect::of_url(url)?;
        let amh = ActiveMemberHandler {
            url: url.to_owned(),
            dialect,
            member_id: config.member_id.clone(),
            security_level: config.security_level,
            license: config.license.clone(),
            controllers_retry: config.controllers_retry,
            services: services.clone(),
            closed: closed.clone(),
        };
        Ok(Member {
            dialect,
            url: url.to_owned(),
            config,
            conn: None,
            services,
            amh,
            closed,
            first_run: true,
            instance_processed: false,
        })
    }

    /// The services' handler, to run a poll's start or stop outside the lock.
    pub fn handler(&self) -> ActiveMemberHandler {
        self.amh.clone()
    }

    fn me(&self) -> &str {
        &self.config.member_id
    }

    fn licensed(&self) -> bool {
        self.config.license.present()
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

    /// CI `check`: the ordering must not be held by another live instance
    /// (any cluster id: CI compares the ordering only). A dead holder's row
    /// is taken over: the own row goes, that row gets this member id. Returns
    /// JOC's refusal text when it refuses (docs/joc-facts.md fact 2). The non-unique
    /// orderings repair of CI is not modelled.
    pub async fn check_instance(&mut self) -> Result<std::result::Result<(), String>> {
        let c = self.config.clone();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(r#"{} WHERE "ORDERING" = ? ORDER BY "ID""#, instance_select(d)),
            );
            let holder: Option<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
                .bind(i64::from(c.ordering))
                .fetch_optional(&mut *conn)
                .await
                .context("reading JOC_INSTANCES")?;
            let Some(holder) = holder.map(instance_of) else {
                return Ok(Ok(()));
            };
            if holder.member_id == c.member_id {
                return Ok(Ok(()));
            }
            if holder.is_fresh(CHECK_INSTANCE_EXCEEDED_S) {
                return Ok(Err(format!(
                    "There is already a running JOC instance with ID '{}#{}'. You can modify the 'ordering' in the joc.properties file.",
                    holder.cluster_id, c.ordering
                )));
            }
            let mut tx = conn.begin().await?;
            sqlx::query(AssertSqlSafe(sql(
                d,
                r#"DELETE FROM JOC_INSTANCES WHERE "MEMBER_ID" = ?"#,
            )))
            .bind(&c.member_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(sql(
                d,
                r#"UPDATE JOC_INSTANCES SET "MEMBER_ID" = ?, "DATA_DIRECTORY" = ?, "API_SERVER" = ?, "CLUSTER_ID" = ? WHERE "MEMBER_ID" = ?"#,
            )))
            .bind(&c.member_id)
            .bind(&c.data_directory)
            .bind(i64::from(c.api_server))
            .bind(c.cluster_id())
            .bind(&holder.member_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                "[check instance][took over the row of the dead instance {}]",
                holder.member_id
            );
            Ok(Ok(()))
        })
        .await
    }

    /// Start-up (`JocClusterService.start` → JC `getInstance`): JI
    /// `getInstance` registers or refreshes the JOC_INSTANCES row, the stored
    /// settings are read from JOC_CONFIGURATIONS, then `tryDeleteActiveCurrentMember`.
    /// JOC retries a failure after 30 s; the caller does.
    pub async fn start(&mut self) -> Result<()> {
        self.register_instance().await?;
        self.read_stored_settings().await?;
        self.instance_processed = true;
        let deleted = self.try_delete_active_current_member().await?;
        if deleted > 0 {
            tracing::info!("[start][deleted own JOC_CLUSTER row left from a previous run]");
        }
        Ok(())
    }

    /// JC `getStoredSettings`: the GLOBALS of JOC_CONFIGURATIONS (the table
    /// must exist; the settings themselves do not matter to the stand-in).
    async fn read_stored_settings(&mut self) -> Result<()> {
        self.with_conn(async |conn, d| {
            let q = sql(
                d,
                r#"SELECT COUNT(*) FROM JOC_CONFIGURATIONS WHERE "CONFIGURATION_TYPE" = 'GLOBALS'"#,
            );
            let _: i64 = sqlx::query_scalar(AssertSqlSafe(q))
                .fetch_one(&mut *conn)
                .await
                .context("reading JOC_CONFIGURATIONS")?;
            Ok(())
        })
        .await
    }

    /// JI `getInstance` (docs/joc-facts.md fact 18): OS_ID from INV_OPERATING_SYSTEMS (JI
    /// `getOS`: the host's row, inserted if missing), insert the row if
    /// missing (URI not written, TIMEZONE the JVM's, STARTED_AT from the JVM
    /// clock, HEART_BEAT the database's UTC now), else update it as a start in
    /// mode automatic does (all but DATA_DIRECTORY, OS_ID, TIMEZONE and URI).
    async fn register_instance(&mut self) -> Result<()> {
        let c = self.config.clone();
        let api = i64::from(c.api_server());
        let title = c.title();
        let version = truncate(STANDIN_VERSION, 30);
        self.with_conn(async move |conn, d| {
            let mut tx = conn.begin().await?;
            let os_id = os_id(&mut tx, d, &c.hostname).await?;
            let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql(
                d,
                &format!(r#"SELECT {} FROM JOC_INSTANCES WHERE "MEMBER_ID" = ?"#, int(d, "\"ID\"")),
            )))
            .bind(&c.member_id)
            .fetch_optional(&mut *tx)
            .await?;
            let now = now_utc(d);
            let started = from_epoch(d);
            if exists.is_none() {
                let q = sql(
                    d,
                    &format!(
                        r#"INSERT INTO JOC_INSTANCES ("CLUSTER_ID", "MEMBER_ID", "OS_ID", "DATA_DIRECTORY", "SECURITY_LEVEL", "TIMEZONE", "STARTED_AT", "TITLE", "ORDERING", "URI", "HEART_BEAT", "API_SERVER", "VERSION") VALUES (?, ?, ?, ?, ?, ?, {started}, ?, ?, NULL, {now}, ?, ?)"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(c.cluster_id())
                    .bind(&c.member_id)
                    .bind(os_id)
                    .bind(&c.data_directory)
                    .bind(c.security_level.name())
                    .bind(&c.timezone)
                    .bind(c.started_at_s)
                    .bind(&title)
                    .bind(i64::from(c.ordering))
                    .bind(api)
                    .bind(&version)
                    .execute(&mut *tx)
                    .await
                    .context("inserting the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][inserted]");
            } else {
                let q = sql(
                    d,
                    &format!(
                        r#"UPDATE JOC_INSTANCES SET "SECURITY_LEVEL" = ?, "CLUSTER_ID" = ?, "ORDERING" = ?, "TITLE" = ?, "STARTED_AT" = {started}, "HEART_BEAT" = {now}, "API_SERVER" = ?, "VERSION" = ? WHERE "MEMBER_ID" = ?"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(c.security_level.name())
                    .bind(c.cluster_id())
                    .bind(i64::from(c.ordering))
                    .bind(&title)
                    .bind(c.started_at_s)
                    .bind(api)
                    .bind(&version)
                    .bind(&c.member_id)
                    .execute(&mut *tx)
                    .await
                    .context("updating the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][updated]");
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
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

    /// JC `tryResetCurrentInstanceHeartBeat` (clean shutdown, docs/joc-facts.md fact 12):
    /// the own JOC_INSTANCES.HEART_BEAT becomes `new Date(0)`, 1970-01-01, so
    /// the instance is stale at once.
    async fn try_reset_current_instance_heart_beat(&mut self) -> Result<u64> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                    from_epoch(d)
                ),
            );
            Ok(sqlx::query(AssertSqlSafe(q))
                .bind(0_i64)
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("resetting the instance heartbeat")?
                .rows_affected())
        })
        .await
    }

    /// One poll: JC `process`. Writes the instance heartbeat, then (members
    /// only) reads and handles JOC_CLUSTER; returns the start or stop of the
    /// services that JC runs in its `finally` (`performActiveMemberServices`),
    /// for the caller to run outside the lock.
    pub async fn process(&mut self) -> Result<Option<(bool, StartupMode)>> {
        let first_run = std::mem::replace(&mut self.first_run, false);
        self.update_instance_heart_beat().await?;
        if self.config.api_server() {
            // API servers never touch JOC_CLUSTER and never run the services.
            return Ok(None);
        }
        let item = self.get_cluster().await?;
        tracing::debug!("[poll][read JOC_CLUSTER]{item:?}");
        let Some((row, mode, skip_perform)) = self
            .handle_current_member_on_process(item, first_run)
            .await?
        else {
            return Ok(None);
        };
        if skip_perform {
            return Ok(None);
        }
        // JC `performActiveMemberServices`.
        let active = self.services.is_active();
        Ok(if row.member_id == self.me() {
            (!active).then_some((true, mode))
        } else {
            active.then_some((false, mode))
        })
    }

    /// JC `inactiveMemberTryStopServices`.
    async fn inactive_member_try_stop_services(&mut self) {
        if self.services.is_active() {
            tracing::info!("[automatic][start][stop services because current is inactive]");
            self.amh.perform(StartupMode::Automatic, false).await;
        }
    }

    /// JC `handleCurrentMemberOnProcess`: (row, mode, skipPerform), None for JC's `null`.
    async fn handle_current_member_on_process(
        &mut self,
        item: Option<ClusterRow>,
        first_run: bool,
    ) -> Result<Option<(ClusterRow, StartupMode, bool)>> {
        let me = self.me().to_owned();
        let licensed = self.licensed();
        let mut mode = StartupMode::Automatic;
        let mut row = match item {
            Some(row) => row,
            None => {
                if !licensed && !first_run {
                    // Without license only a first run creates the row (docs/joc-facts.md fact 10).
                    self.inactive_member_try_stop_services().await;
                    return Ok(None);
                }
                match self.insert_cluster().await {
                    Ok(()) => {
                        tracing::info!("[cluster][inserted JOC_CLUSTER row][memberId={me}]");
                        if !first_run {
                            mode = StartupMode::Failover;
                        }
                        ClusterRow {
                            member_id: me.clone(),
                            heart_beat: 0,
                            switch_member_id: None,
                            switch_heart_beat: None,
                            notification_member_id: None,
                            notification: None,
                            db_now: 0,
                        }
                    }
                    Err(error) => {
                        // SOSHibernateObjectOperationException: rollback, read again
                        // (a duplicate key means another member inserted first).
                        tracing::info!("[cluster][insert failed, reading again]{error:#}");
                        match self.get_cluster().await? {
                            Some(row) => row,
                            None => return Ok(None),
                        }
                    }
                }
            }
        };
        if row.member_id == me {
            return self
                .try_switch_active_member_on_process(row, first_run)
                .await;
        }
        if self.exceeded(row.db_now, Some(row.heart_beat)) {
            if !licensed && !first_run {
                // docs/joc-facts.md fact 10: without license a standby never fails over.
                return Ok(None);
            }
            let mut update = true;
            // "to avoid start of the current instance if a switchMember defined":
            // whatever the switch target is, an API server too (docs/joc-facts.md fact 14).
            if licensed
                && let Some(switch) = row.switch_member_id.clone()
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
                // No version check: `sos-joc/sos-joc-db/.../joc/DBItemJocCluster.java`
                // has its @Version commented out, so two standbys that read the
                // exceeded row at once both take over and both start services;
                // the last writer stays MEMBER_ID, the other stops at its next poll.
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
                mode = if licensed {
                    StartupMode::Failover
                } else {
                    StartupMode::Automatic
                };
            }
        } else {
            self.inactive_member_try_stop_services().await;
        }
        Ok(Some((row, mode, false)))
    }

    /// JC `trySwitchActiveMemberOnProcess`: (row, mode, skipPerform), None for JC's `null`.
    async fn try_switch_active_member_on_process(
        &mut self,
        mut row: ClusterRow,
        first_run: bool,
    ) -> Result<Option<(ClusterRow, StartupMode, bool)>> {
        let me = self.me().to_owned();
        let Some(switch) = row.switch_member_id.clone() else {
            if !self.licensed() && !self.services.is_active() && !first_run {
                // Without license a MEMBER_ID that does not run services (a
                // switch target that refused to start) never heartbeats the
                // row: its heartbeat freezes (docs/joc-facts.md fact 10).
                return Ok(None);
            }
            // The normal heartbeat of the active member: every column from
            // the row read at the start of this poll (docs/joc-facts.md fact 15).
            self.update_cluster(
                &me,
                Ts::Now,
                None,
                Ts::Epoch(row.switch_heart_beat),
                &row.clone(),
            )
            .await?;
            return Ok(Some((row, StartupMode::Automatic, false)));
        };
        let mode = StartupMode::ManualSwitchover;
        if switch == me {
            // I am the switch target and now active: clear the switch fields.
            tracing::info!("[switch][completed][memberId={me}]");
            self.update_cluster(&me, Ts::Now, None, Ts::Epoch(None), &row.clone())
                .await?;
            row.switch_member_id = None;
            row.switch_heart_beat = None;
            return Ok(Some((row, mode, false)));
        }
        let mut errors = 0;
        let mut closed = self.closed.clone();
        loop {
            let attempt = async {
                let now = self.db_now().await?;
                let mut skip_perform = false;
                let mut new_member = me.clone();
                if self.exceeded(now, row.switch_heart_beat) {
                    // docs/joc-facts.md fact 13: skipped at every poll and never cleared.
                    tracing::info!(
                        "[{}][switch][skip][newMemberId={switch}][db][UTC]switchHeartBeat={:?} exceeded",
                        mode.name(),
                        row.switch_heart_beat
                    );
                } else {
                    // docs/joc-facts.md fact 14: executed without looking at the target.
                    tracing::info!("[{}][switch][stop current]newMemberId={switch}", mode.name());
                    if self.services.is_active() {
                        self.amh.perform(mode, false).await;
                    }
                    new_member = switch.clone();
                    skip_perform = true;
                }
                // `item.setSwitchMemberId(null)` is commented out in JC: the switch fields stay.
                self.update_cluster(
                    &new_member,
                    Ts::Now,
                    Some(&switch),
                    Ts::Epoch(row.switch_heart_beat),
                    &row.clone(),
                )
                .await?;
                anyhow::Ok((new_member, skip_perform))
            }
            .await;
            match attempt {
                Ok((new_member, skip_perform)) => {
                    row.member_id = new_member;
                    return Ok(Some((row, mode, skip_perform)));
                }
                Err(error) => {
                    tracing::warn!("[{}][{errors}]{error:#}", mode.name());
                    errors += 1;
                    if errors >= SWITCH_RETRIES || *closed.borrow() {
                        return Err(error);
                    }
                    wait_for(&mut closed, SWITCH_RETRY_WAIT).await;
                }
            }
        }
    }

    /// REST `joc/cluster/switch_member` (`ClusterResourceImpl` → JC
    /// `switchMember`, `setSwitchMember`; docs/joc-facts.md fact 17). The Controller-cluster
    /// check of `ClusterResourceImpl.checkSwitchingControllerIds` is not
    /// modelled (the stand-in has no Controller cluster).
    pub async fn switch_member(
        &mut self,
        new_member_id: Option<&str>,
    ) -> Result<SwitchState, SwitchError> {
        let mode = StartupMode::ManualSwitchover;
        let Some(new) = new_member_id.filter(|s| !s.is_empty()).map(str::to_owned) else {
            return Err(SwitchError::Refused("missing newMemberId".to_owned()));
        };
        let me = self.me().to_owned();
        if new == me {
            if self.config.api_server() {
                return Err(SwitchError::Refused(format!(
                    "[{}][{}]{MSG_SWITCH_TO_API_SERVER}",
                    mode.name(),
                    self.config.title()
                )));
            }
            if self.services.is_active() {
                return Ok(SwitchState::AlreadyStarted);
            }
        }
        // JC `switchMember`: `rereadClusterMode` (1 s when licensed), then the license.
        if self.licensed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            return Err(SwitchError::MissingLicense);
        }
        let mut errors = 0;
        loop {
            match self.set_switch_member(&new).await {
                Ok(answer) => return answer,
                Err(error) => {
                    tracing::warn!("[{}][switch][{errors}]{error:#}", mode.name());
                    errors += 1;
                    if errors >= SWITCH_RETRIES {
                        return Err(SwitchError::Database(error));
                    }
                    let mut closed = self.closed.clone();
                    wait_for(&mut closed, SWITCH_RETRY_WAIT).await;
                }
            }
        }
    }

    /// JC `setSwitchMember`; the outer error is a database error (retried).
    async fn set_switch_member(&mut self, new: &str) -> Result<Result<SwitchState, SwitchError>> {
        let mode = StartupMode::ManualSwitchover;
        let me = self.me().to_owned();
        let refusal = |ji: &Instance| {
            SwitchError::Refused(format!(
                "[{}][{}]{MSG_SWITCH_TO_API_SERVER}",
                mode.name(),
                ji.display_name()
            ))
        };
        let Some(row) = self.get_cluster().await? else {
            return Ok(Err(SwitchError::Refused("db cluster not found".to_owned())));
        };
        if row.member_id == me {
            if new == me {
                return Ok(Ok(SwitchState::AlreadyStarted));
            }
            let target = self.get_instance(new).await?;
            let Some(target) = target else {
                // JC only logs this; the error answer is commented out.
                tracing::info!(
                    "[{}][switch][skip][newMemberId={new}]JocInstance not found",
                    mode.name()
                );
                return Ok(Ok(SwitchState::SwitchMember));
            };
            if target.api_server {
                return Ok(Err(refusal(&target)));
            }
            if self.exceeded(target.heart_beat + target.age_s, Some(target.heart_beat)) {
                tracing::info!(
                    "[{}][switch][skip][newMemberId={new}][db][UTC]heartBeat={} exceeded",
                    mode.name(),
                    target.heart_beat
                );
                return Ok(Ok(SwitchState::SwitchMember));
            }
            if self.services.is_active() {
                // First write: SWITCH_HEART_BEAT = now on the row as read (read
                // by ControllerResourceModifyClusterImpl.isSwitchingJocInstances).
                self.update_cluster(
                    &row.member_id,
                    Ts::Epoch(Some(row.heart_beat)),
                    row.switch_member_id.as_deref(),
                    Ts::Now,
                    &row,
                )
                .await?;
                self.amh.perform(mode, false).await;
            }
            self.update_cluster(new, Ts::Now, Some(new), Ts::Now, &row)
                .await?;
            tracing::info!("[{}][switch][end]newMemberId={new}", mode.name());
            return Ok(Ok(SwitchState::SwitchMember));
        }
        if row.member_id == new {
            return Ok(Ok(SwitchState::AlreadyStarted));
        }
        if row.switch_member_id.as_deref() == Some(new) {
            return Ok(Ok(SwitchState::SwitchMember));
        }
        let mut answer = Ok(SwitchState::SwitchMember);
        let mut skip = false;
        if new == me {
            skip = self.config.api_server();
        } else {
            match self.get_instance(new).await? {
                None => {
                    skip = true;
                    tracing::info!(
                        "[{}][switch][skip][setSwitchMember][newMemberId={new}]not found",
                        mode.name()
                    );
                }
                Some(target) if target.api_server => {
                    skip = true;
                    answer = Err(refusal(&target));
                }
                Some(target) => {
                    if self.exceeded(target.heart_beat + target.age_s, Some(target.heart_beat)) {
                        skip = true;
                        tracing::info!(
                            "[{}][switch][skip][setSwitchMember][newMemberId={new}][db][UTC]heartBeat={} exceeded",
                            mode.name(),
                            target.heart_beat
                        );
                    }
                }
            }
        }
        if !skip {
            // Not active: ask the active to hand over at its next poll. The
            // whole row is rewritten, HEART_BEAT = now too (docs/joc-facts.md fact 17).
            self.update_cluster(&row.member_id, Ts::Now, Some(new), Ts::Now, &row)
                .await?;
            tracing::info!(
                "[{}][switch][end][setSwitchMember]newMemberId={new}[active={}]",
                mode.name(),
                row.member_id
            );
        }
        Ok(answer)
    }

    /// Clean shutdown (JSC `destroy` → `JocClusterService.stop(automatic,
    /// deleteActiveCurrentMember = true, resetCurrentInstanceHeartBeat = true)`
    /// → JC `close`, docs/joc-facts.md fact 12): stop the services, delete the row if it is
    /// this member's and no switch is pending, and reset the instance
    /// heartbeat to 1970-01-01. `closed` must already be true. Returns the
    /// rows deleted.
    pub async fn shutdown(&mut self) -> Result<u64> {
        if self.services.is_active() {
            self.amh.perform(StartupMode::Automatic, false).await;
        }
        if !self.instance_processed {
            return Ok(0);
        }
        let deleted = self.try_delete_active_current_member().await;
        let reset = self.try_reset_current_instance_heart_beat().await;
        let deleted = deleted?;
        reset?;
        Ok(deleted)
    }

    /// Whether this member's services run.
    pub fn services_active(&self) -> bool {
        self.services.is_active()
    }
}

/// JI `getOS`: the INV_OPERATING_SYSTEMS row of `hostname`, inserted if
/// missing (NAME, ARCHITECTURE, DISTRIBUTION from the JVM's `os.*`
/// properties; here the kernel's).
async fn os_id(conn: &mut AnyConnection, d: Dialect, hostname: &str) -> Result<i64> {
    let select = sql(
        d,
        &format!(
            r#"SELECT {} FROM INV_OPERATING_SYSTEMS WHERE "HOSTNAME" = ?"#,
            int(d, "\"ID\"")
        ),
    );
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(select.clone()))
        .bind(hostname)
        .fetch_optional(&mut *conn)
        .await
        .context("reading INV_OPERATING_SYSTEMS")?;
    if let Some(id) = found {
        return Ok(id);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO INV_OPERATING_SYSTEMS ("HOSTNAME", "NAME", "ARCHITECTURE", "DISTRIBUTION", "MODIFIED") VALUES (?, 'Linux', ?, ?, {})"#,
            now_utc(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(hostname)
        .bind(std::env::consts::ARCH)
        .bind(truncate(&release, 255))
        .execute(&mut *conn)
        .await
        .context("inserting the INV_OPERATING_SYSTEMS row")?;
    sqlx::query_scalar(AssertSqlSafe(select))
        .bind(hostname)
        .fetch_one(&mut *conn)
        .await
        .context("reading INV_OPERATING_SYSTEMS")
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
