//! Command-line flags and the `render-joc-config` subcommand.

use std::path::PathBuf;

use clap::Parser;

use super::{ConfigError, LogFormat, Workload, config_error};

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
    /// Address of the pod-port HTTP server (/healthz, /readyz, /metrics).
    #[arg(long, env = "JOC_HA_HTTP_ADDR", default_value = "0.0.0.0:9086")]
    pub http_addr: String,
    /// Loopback address of the in-pod HTTP server (/role, /prestop). Must
    /// be a loopback address.
    #[arg(long, env = "JOC_HA_LOCAL_ADDR", default_value = "127.0.0.1:9087")]
    pub local_addr: String,
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
    /// Before writing anything, claim the database for this JocCluster
    /// (JOC_HA_NAMESPACE/JOC_HA_CLUSTER) and fail if another one owns it,
    /// so that a refused cluster's JOC never starts (one js7 cluster per
    /// database: JOC's tables are database-wide).
    #[arg(long)]
    pub claim_database: bool,
}

/// `render-joc-config --claim-database`: the cluster id (`namespace/name`,
/// as the lease names it) and the member name to claim the database with.
pub fn claim_identity(flags: &Flags) -> Result<(String, String), ConfigError> {
    let required = |value: &Option<String>, setting: &'static str| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| config_error(setting, "is required with --claim-database"))
    };
    let pod = required(&flags.pod_name, "JOC_HA_POD_NAME (--pod-name)")?;
    let namespace = required(&flags.namespace, "JOC_HA_NAMESPACE (--namespace)")?;
    let cluster = required(&flags.cluster, "JOC_HA_CLUSTER (--cluster)")?;
    Ok((format!("{namespace}/{cluster}"), pod))
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}
