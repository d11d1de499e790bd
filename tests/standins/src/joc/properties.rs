//! joc.properties

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

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
