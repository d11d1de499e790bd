//! The sidecar's settings, from flags or the environment the operator sets
//! (names in `joc_ha_crds::names::sidecar_env`). A wrong or missing setting
//! stops start-up with one line naming it.

mod database;
mod flags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use joc_ha_crds::v1alpha1::parse_duration;

pub use crate::lease::redact_url;
pub use database::database_from_flags;
pub use flags::{Command, Flags, RenderArgs, claim_identity};

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
    /// Loopback only (checked): `/role` and `/prestop`.
    pub local_addr: SocketAddr,
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
            .field("local_addr", &self.local_addr)
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
        let local_addr = parse_local_addr(&flags.local_addr)?;
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
            local_addr,
            log_format: flags.log_format,
            joc,
        })
    }

    /// The database URL with its password replaced, for logs and errors.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url)
    }
}

/// JOC_HA_LOCAL_ADDR: a loopback address, since what it serves (`/prestop`
/// steps a member down) must not be reachable from outside the pod.
pub fn parse_local_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    const SETTING: &str = "JOC_HA_LOCAL_ADDR (--local-addr)";
    let addr: SocketAddr = text.parse().map_err(|_| {
        config_error(
            SETTING,
            format!("{text:?} is not an address such as 127.0.0.1:9087"),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(config_error(
            SETTING,
            format!(
                "{addr} is not a loopback address; /role and /prestop must not be reachable from outside the pod (use 127.0.0.1)"
            ),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests;
