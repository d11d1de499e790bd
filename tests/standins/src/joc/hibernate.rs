//! hibernate.cfg.xml

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::properties::JocProperties;

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
