//! The sidecar's settings, from flags or the environment the operator sets
//! (names in `joc_ha_crds::names::sidecar_env`). A wrong or missing setting
//! stops start-up with one line naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use joc_ha_crds::v1alpha1::parse_duration;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use crate::lease::redact_url;

/// Command-line flags; each can also come from its `JOC_HA_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "joc-ha-sidecar",
    version,
    about = "Keeps the JOC Cockpit cluster lease and routes the Service to the active member"
)]
pub struct Flags {
    /// Name of this pod (downward API `metadata.name`).
    #[arg(long, env = "JOC_HA_POD_NAME")]
    pub pod_name: Option<String>,
    /// Namespace of this pod (downward API `metadata.namespace`).
    #[arg(long, env = "JOC_HA_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the JocCluster this pod belongs to.
    #[arg(long, env = "JOC_HA_CLUSTER")]
    pub cluster: Option<String>,
    /// `postgresql`, `mysql`, `mariadb` or `sqlite`; inferred from the URL when unset.
    #[arg(long, env = "JOC_HA_DATABASE_TYPE")]
    pub database_type: Option<String>,
    /// Full database URL; the parts below are used when it is unset.
    #[arg(long, env = "JOC_HA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[arg(long, env = "JOC_HA_DATABASE_HOST")]
    pub database_host: Option<String>,
    #[arg(long, env = "JOC_HA_DATABASE_PORT")]
    pub database_port: Option<String>,
    #[arg(long, env = "JOC_HA_DATABASE_NAME")]
    pub database_name: Option<String>,
    #[arg(long, env = "JOC_HA_DATABASE_USER")]
    pub database_user: Option<String>,
    #[arg(long, env = "JOC_HA_DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,
    /// TLS mode: disable, prefer, require, verify-ca, verify-full.
    #[arg(long, env = "JOC_HA_DATABASE_TLS_MODE")]
    pub database_tls_mode: Option<String>,
    /// The database's CA certificate (PEM file) for the verifying TLS modes.
    #[arg(long, env = "JOC_HA_DATABASE_CA_FILE")]
    pub database_ca_file: Option<String>,
    /// Lease time-to-live, judged by the database clock.
    #[arg(long, env = "JOC_HA_LEASE_TTL", default_value = "5s")]
    pub lease_ttl: String,
    /// How often the holder renews and standbys heartbeat; at most TTL/3.
    #[arg(long, env = "JOC_HA_RENEW_INTERVAL", default_value = "1s")]
    pub renew_interval: String,
    /// Folder (shared with the cockpit container) for the role file.
    #[arg(long, env = "JOC_HA_ROLE_DIR")]
    pub role_dir: Option<PathBuf>,
    /// Command run (through `sh -c`) on every role change, with JOC_HA_ROLE and JOC_HA_TERM set.
    #[arg(long, env = "JOC_HA_ON_ROLE_CHANGE")]
    pub on_role_change: Option<String>,
    /// Address of the HTTP server (/role, /healthz, /readyz, /metrics, /prestop).
    #[arg(long, env = "JOC_HA_HTTP_ADDR", default_value = "0.0.0.0:9086")]
    pub http_addr: String,
    /// Log format: plain or json.
    #[arg(long, env = "JOC_HA_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// What runs in the cockpit container: `js7` (JOC Cockpit, whose own
    /// active member is kept in agreement with the lease) or `generic`.
    #[arg(long, env = "JOC_HA_WORKLOAD", value_enum, default_value = "js7")]
    pub workload: Workload,
    /// js7: JOC's data directory (its `user.dir`), part of the JOC member id.
    #[arg(
        long,
        env = "JOC_HA_JOC_DATA_DIR",
        default_value = "/var/sos-berlin.com/js7/joc"
    )]
    pub joc_data_dir: String,
    /// js7: the host name JOC sees (its `HOSTNAME`); the pod name by default.
    #[arg(long, env = "JOC_HA_JOC_HOSTNAME")]
    pub joc_hostname: Option<String>,
    /// js7: JOC's `cluster_polling_interval` in seconds.
    #[arg(long, env = "JOC_HA_JOC_POLLING_INTERVAL", default_value_t = 30)]
    pub joc_polling_interval: u64,
    /// js7: JOC's `cluster_heart_beat_exceeded_interval` in seconds.
    #[arg(
        long,
        env = "JOC_HA_JOC_HEART_BEAT_EXCEEDED_INTERVAL",
        default_value_t = 60
    )]
    pub joc_heart_beat_exceeded_interval: u64,
    /// js7: whether JOC has a cluster license (the operator says `false`
    /// when `spec.license` is missing): without one the sidecar never writes
    /// a switch request and the lease follows JOC's own active member.
    #[arg(long, env = "JOC_HA_JOC_LICENSED", default_value_t = true, action = clap::ArgAction::Set)]
    pub joc_licensed: bool,
    /// js7: JOC's JETTY_BASE as its JVM's command line has it
    /// (`-Djetty.base=<dir>`); the sidecar finds the JVM to fence by it.
    #[arg(
        long,
        env = "JOC_HA_JOC_JETTY_BASE",
        default_value = "/var/sos-berlin.com/js7/joc"
    )]
    pub joc_jetty_base: String,
    /// js7: fence (SIGKILL) this pod's JOC JVM when it must not run JOC's
    /// services (README "Fencing"). Needs `shareProcessNamespace: true` and
    /// JOC's uid for the sidecar, as the operator sets them.
    #[arg(long, env = "JOC_HA_JOC_FENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub joc_fence: bool,
    /// js7: seconds JOC sleeps before it looks again for a registered
    /// Controller while it waits for the first one (60 in JOC's code,
    /// docs/joc-facts.md fact 9): how long after the Controller appears the
    /// sidecar still keeps the heartbeat of its waiting JOC.
    #[arg(long, env = "JOC_HA_JOC_CONTROLLERS_RETRY", default_value_t = 60)]
    pub joc_controllers_retry: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Work other than running the sidecar.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// js7: the `joc-config` init container. Merges JOC's `joc.properties`
    /// (the image's keys kept, the user's over them, the operator's last,
    /// with this pod's `ordering`), writes `hibernate.cfg.xml` from the same
    /// Secret as the lease (the password as `${JS7_DBMS_PASSWORD}`),
    /// `joc-settings.properties` (API-server flag, security level) and the
    /// license files, then exits.
    RenderJocConfig(RenderArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// JOC's resources folder holding the image's files (the `joc-resources`
    /// volume): `joc.properties` is merged there, `hibernate.cfg.xml` and the
    /// license written there.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The folder of the image's `joc-settings.properties` (the
    /// `joc-classes` volume); it is rewritten there.
    #[arg(long)]
    pub classes_dir: Option<PathBuf>,
    /// A `joc.properties` key the operator sets, as `key=value`; repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Added to the pod's StatefulSet ordinal (from JOC_HA_POD_NAME) to make
    /// JOC's `ordering`: 0 for members, 50 for API servers.
    #[arg(long, default_value_t = 0)]
    pub ordering_offset: u32,
    /// This pod is an API server (`as_api_server = yes`).
    #[arg(long)]
    pub api_server: bool,
    /// JOC's `security_level`; the image's when unset, else low.
    #[arg(long, value_parser = ["low", "medium", "high"])]
    pub security_level: Option<String>,
    /// The mounted license Secret (`js7-license.jar` and key files).
    #[arg(long)]
    pub license_dir: Option<PathBuf>,
    /// The user's own `joc.properties` / `hibernate.cfg.xml` (`spec.config`).
    #[arg(long)]
    pub user_config_dir: Option<PathBuf>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// The application in the cockpit container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Js7,
    Generic,
}

/// js7 mode: who this member is to JOC and JOC's cluster timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JocSettings {
    /// `<hostname>:<SHA-256 of the data directory>`.
    pub member_id: String,
    /// JOC's data directory: other members' ids use it too.
    pub data_dir: String,
    pub polling_interval: Duration,
    pub heart_beat_exceeded_interval: Duration,
    /// JOC has a cluster license (see [`Flags::joc_licensed`]).
    pub licensed: bool,
    /// JOC's JETTY_BASE, the mark of its JVM (see [`Flags::joc_jetty_base`]).
    pub jetty_base: String,
    /// Fencing is on (see [`Flags::joc_fence`]).
    pub fence: bool,
    /// See [`Flags::joc_controllers_retry`].
    pub controllers_retry: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Database products the lease runs on (the API's `spec.database.type`).
pub use joc_ha_crds::v1alpha1::DatabaseKind;

/// Validated settings.
#[derive(Clone)]
pub struct Config {
    pub pod_name: String,
    pub namespace: String,
    pub cluster: String,
    pub database_kind: DatabaseKind,
    /// Holds the password: never log it; use [`Config::redacted_database_url`].
    pub database_url: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub role_dir: Option<PathBuf>,
    pub on_role_change: Option<String>,
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
    /// Set in js7 mode.
    pub joc: Option<JocSettings>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("pod_name", &self.pod_name)
            .field("namespace", &self.namespace)
            .field("cluster", &self.cluster)
            .field("database_kind", &self.database_kind)
            .field("database_url", &self.redacted_database_url())
            .field("lease_ttl", &self.lease_ttl)
            .field("renew_interval", &self.renew_interval)
            .field("role_dir", &self.role_dir)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

/// A setting that is missing or wrong; the message names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn config_error(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

/// Characters kept as they are in a URL's user or password.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

impl Config {
    pub fn from_flags(flags: Flags) -> Result<Config, ConfigError> {
        let required = |value: Option<String>, setting: &'static str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| config_error(setting, "is required"))
        };
        let pod_name = required(flags.pod_name.clone(), "JOC_HA_POD_NAME (--pod-name)")?;
        let namespace = required(flags.namespace.clone(), "JOC_HA_NAMESPACE (--namespace)")?;
        let cluster = required(flags.cluster.clone(), "JOC_HA_CLUSTER (--cluster)")?;

        let (database_url, database_kind) = database_from_flags(&flags)?;

        let lease_ttl = parse_duration(&flags.lease_ttl)
            .map_err(|e| config_error("JOC_HA_LEASE_TTL (--lease-ttl)", e))?;
        let renew_interval = parse_duration(&flags.renew_interval)
            .map_err(|e| config_error("JOC_HA_RENEW_INTERVAL (--renew-interval)", e))?;
        if renew_interval.is_zero() || renew_interval * 3 > lease_ttl {
            return Err(config_error(
                "JOC_HA_RENEW_INTERVAL (--renew-interval)",
                format!(
                    "{} must be above 0 and at most a third of the lease TTL {}, so the holder renews at least twice before its lease can expire",
                    flags.renew_interval, flags.lease_ttl
                ),
            ));
        }
        let http_addr = flags.http_addr.parse().map_err(|_| {
            config_error(
                "JOC_HA_HTTP_ADDR (--http-addr)",
                format!(
                    "{:?} is not an address such as 0.0.0.0:9086",
                    flags.http_addr
                ),
            )
        })?;
        let joc = match flags.workload {
            Workload::Generic => None,
            Workload::Js7 => {
                if flags.joc_polling_interval == 0 {
                    return Err(config_error(
                        "JOC_HA_JOC_POLLING_INTERVAL (--joc-polling-interval)",
                        "must be at least 1 (seconds)",
                    ));
                }
                if flags.joc_heart_beat_exceeded_interval < 2 {
                    return Err(config_error(
                        "JOC_HA_JOC_HEART_BEAT_EXCEEDED_INTERVAL (--joc-heart-beat-exceeded-interval)",
                        "must be at least 2 (seconds)",
                    ));
                }
                let hostname = flags
                    .joc_hostname
                    .filter(|h| !h.trim().is_empty())
                    .unwrap_or_else(|| pod_name.clone());
                Some(JocSettings {
                    member_id: crate::js7::member_id(&hostname, &flags.joc_data_dir),
                    data_dir: flags.joc_data_dir.clone(),
                    polling_interval: Duration::from_secs(flags.joc_polling_interval),
                    heart_beat_exceeded_interval: Duration::from_secs(
                        flags.joc_heart_beat_exceeded_interval,
                    ),
                    licensed: flags.joc_licensed,
                    jetty_base: flags.joc_jetty_base.clone(),
                    fence: flags.joc_fence,
                    controllers_retry: Duration::from_secs(flags.joc_controllers_retry),
                })
            }
        };
        Ok(Config {
            pod_name,
            namespace,
            cluster,
            database_kind,
            database_url,
            lease_ttl,
            renew_interval,
            role_dir: flags.role_dir,
            on_role_change: flags.on_role_change.filter(|c| !c.trim().is_empty()),
            http_addr,
            log_format: flags.log_format,
            joc,
        })
    }

    /// The database URL with its password replaced, for logs and errors.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec![
            "joc-ha-sidecar",
            "--pod-name",
            "joc-0",
            "--namespace",
            "js7",
            "--cluster",
            "joc",
        ];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn composes_a_url_from_secret_parts_with_encoded_password() {
        let config = Config::from_flags(flags(&[
            "--database-type",
            "postgresql",
            "--database-host",
            "db",
            "--database-name",
            "joc",
            "--database-user",
            "joc",
            "--database-password",
            "p@ss:w/rd",
        ]))
        .expect("valid");
        assert_eq!(
            config.database_url,
            "postgres://joc:p%40ss%3Aw%2Frd@db:5432/joc"
        );
        assert_eq!(
            config.redacted_database_url(),
            "postgres://joc:***@db:5432/joc"
        );
        assert!(
            !format!("{config:?}").contains("p%40ss"),
            "Debug never shows the password"
        );
    }

    #[test]
    fn mariadb_urls_become_mysql_urls() {
        let config =
            Config::from_flags(flags(&["--database-url", "mariadb://u:secret@db:3306/joc"]))
                .expect("valid");
        assert_eq!(config.database_kind, DatabaseKind::Mariadb);
        assert!(config.database_url.starts_with("mysql://"));
    }

    #[test]
    fn each_bad_setting_is_named_and_never_shows_the_password() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--database-url", "http://u:secret@db/x"],
                "JOC_HA_DATABASE_URL",
            ),
            (&["--database-type", "oracle"], "JOC_HA_DATABASE_TYPE"),
            (&[], "JOC_HA_DATABASE_URL"),
            (&["--database-type", "postgresql"], "JOC_HA_DATABASE_HOST"),
            (
                &[
                    "--database-url",
                    "postgres://u:secret@db/x",
                    "--renew-interval",
                    "2s",
                ],
                "JOC_HA_RENEW_INTERVAL",
            ),
            (
                &[
                    "--database-url",
                    "postgres://u:secret@db/x",
                    "--lease-ttl",
                    "five",
                ],
                "JOC_HA_LEASE_TTL",
            ),
            (
                &[
                    "--database-url",
                    "postgres://u:secret@db/x",
                    "--http-addr",
                    "nowhere",
                ],
                "JOC_HA_HTTP_ADDR",
            ),
            (
                &[
                    "--database-url",
                    "postgres://u:secret@db/x",
                    "--database-tls-mode",
                    "maybe",
                ],
                "JOC_HA_DATABASE_TLS_MODE",
            ),
        ];
        for (args, setting) in cases {
            let error = Config::from_flags(flags(args)).expect_err("refused");
            let text = error.to_string();
            assert!(text.contains(setting), "{text:?} should name {setting}");
            assert!(!text.contains("secret"), "{text:?} shows the password");
        }
        let missing_pod =
            Flags::try_parse_from(["joc-ha-sidecar", "--database-url", "sqlite:///tmp/x"])
                .expect("parse");
        let error = Config::from_flags(missing_pod).expect_err("refused");
        assert!(error.to_string().contains("JOC_HA_POD_NAME"));
    }

    #[test]
    fn tls_mode_maps_to_each_driver() {
        let pg = Config::from_flags(flags(&[
            "--database-url",
            "postgres://u:p@db/x",
            "--database-tls-mode",
            "verify-full",
        ]))
        .expect("valid");
        assert!(pg.database_url.ends_with("?sslmode=verify-full"));
        let my = Config::from_flags(flags(&[
            "--database-url",
            "mysql://u:p@db/x",
            "--database-tls-mode",
            "require",
        ]))
        .expect("valid");
        assert!(my.database_url.ends_with("?ssl-mode=REQUIRED"));
    }

    #[test]
    fn mysql_query_credentials_move_into_the_user_info() {
        let config = Config::from_flags(flags(&[
            "--database-url",
            "mariadb://db:3306/joc?user=joc&password=p%40ss&ssl-mode=REQUIRED",
        ]))
        .expect("valid");
        assert_eq!(
            config.database_url,
            "mysql://joc:p%40ss@db:3306/joc?ssl-mode=REQUIRED"
        );
        let error = Config::from_flags(flags(&[
            "--database-url",
            "mysql://u:secret@db/joc?password=other",
        ]))
        .expect_err("ambiguous");
        assert!(error.to_string().contains("keep one"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
        // PostgreSQL's driver reads the query form itself: left as written.
        let pg = Config::from_flags(flags(&[
            "--database-url",
            "postgres://db/joc?user=joc&password=pw",
        ]))
        .expect("valid");
        assert_eq!(pg.database_url, "postgres://db/joc?user=joc&password=pw");
        for url in [&config.database_url, &pg.database_url] {
            crate::lease::DatabaseUrl::parse(url).expect("the lease reads it");
        }
    }

    #[test]
    fn the_ca_file_is_named_in_each_drivers_words() {
        let ca = "/etc/joc-ha/database-ca/ca.crt";
        let pg = Config::from_flags(flags(&[
            "--database-url",
            "postgres://u:p@db/x",
            "--database-tls-mode",
            "verify-ca",
            "--database-ca-file",
            ca,
        ]))
        .expect("valid");
        assert!(
            pg.database_url
                .ends_with("?sslmode=verify-ca&sslrootcert=/etc/joc-ha/database-ca/ca.crt"),
            "{}",
            pg.database_url
        );
        let my = Config::from_flags(flags(&[
            "--database-url",
            "mysql://u:p@db/x",
            "--database-ca-file",
            ca,
        ]))
        .expect("valid");
        assert!(
            my.database_url
                .ends_with("?ssl-ca=/etc/joc-ha/database-ca/ca.crt")
        );
    }

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(
            redact_url("mysql://joc:pw@db:3306/joc?x=1"),
            "mysql://joc:***@db:3306/joc?x=1"
        );
        assert_eq!(redact_url("postgres://db/joc"), "postgres://db/joc");
        assert_eq!(
            redact_url("sqlite:///tmp/lease.db"),
            "sqlite:///tmp/lease.db"
        );
        assert_eq!(redact_url("postgres://a:b@c@db/x"), "postgres://a:***@db/x");
    }
}
