//! What JOC is given: its files, license and security level; the workload
//! mode and JOC's own cluster timings.

use std::time::Duration;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LeaseSpec, SecretReference, parse_duration};

/// Where JOC's configuration files come from; exactly one source.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapName) != has(self.secretName)").message("set exactly one of configMapName and secretName"))]
pub struct ConfigSource {
    /// ConfigMap holding `joc.properties` and/or `hibernate.cfg.xml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Secret holding `joc.properties` and/or `hibernate.cfg.xml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// The Secret with JS7's license (js7 mode). Its key `js7-license.jar` is
/// put at `resources/joc/lib/js7-license.jar` (the image's entrypoint
/// installs it from there); every other key is a license key file put into
/// `resources/joc/license/` under its key name, e.g. `js7-license.pem`.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LicenseSpec {
    /// The Secret in the JocCluster's namespace.
    pub secret_ref: SecretReference,
}

/// JOC's security level (`joc-settings.properties`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevel {
    Low,
    Medium,
    High,
}

impl SecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityLevel::Low => "low",
            SecurityLevel::Medium => "medium",
            SecurityLevel::High => "high",
        }
    }
}

/// The application in the cockpit container and how the sidecar agrees with it.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// `js7` (default): JS7 JOC Cockpit. The operator writes JOC's cluster
    /// settings (`joc.properties`, `hibernate.cfg.xml`) and each sidecar keeps
    /// JOC's own active member (table `JOC_CLUSTER`) equal to the lease holder.
    /// `generic`: any active/standby application that follows the sidecar's
    /// role report (`/role`, the role file, the role-change command).
    #[serde(default)]
    pub mode: WorkloadMode,
    /// JOC's own cluster timings (js7 mode), written to `joc.properties`.
    #[serde(default)]
    pub joc_cluster: JocClusterTimings,
    /// JOC's data directory in the image: `JETTY_BASE`, JOC's `user.dir`
    /// (default `/var/sos-berlin.com/js7/joc`). JOC's files are found below
    /// it (`resources/joc`, `webapps/joc/WEB-INF/classes`), and a JOC member
    /// id is `<hostname>:<SHA-256 of this path>` as Java prints it (no
    /// trailing or doubled `/`). Give the physical path: the JVM reads
    /// `user.dir` from the working directory, with symbolic links resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("workload.jocDataDirectory must be an absolute path"))]
    pub joc_data_directory: Option<String>,
}

/// Kinds of workload in the cockpit container.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadMode {
    #[default]
    Js7,
    Generic,
}

/// JOC Cockpit's cluster service timings (`joc.properties`), whole seconds.
/// By default fitted to the lease: JOC polls every renew interval (at least
/// 1 s) and a standby JOC takes over after a TTL without heartbeat. JOC's own
/// defaults are a 30 s poll and a 60 s timeout.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.pollingInterval) || !has(self.heartBeatExceededInterval) || duration(self.heartBeatExceededInterval).getMilliseconds() >= 2 * duration(self.pollingInterval).getMilliseconds()").message("workload.jocCluster.heartBeatExceededInterval must be at least twice the pollingInterval, or a JOC instance that polls a little late loses its active role"))]
pub struct JocClusterTimings {
    /// `cluster_polling_interval`: how often each JOC instance polls the
    /// cluster table and writes its heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("workload.jocCluster.pollingInterval must be at least 1s (JOC counts whole seconds)"))]
    pub polling_interval: Option<String>,
    /// `cluster_heart_beat_exceeded_interval`: how old the active instance's
    /// heartbeat must be before a standby JOC takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('2s')").message("workload.jocCluster.heartBeatExceededInterval must be at least 2s"))]
    pub heart_beat_exceeded_interval: Option<String>,
}

/// JOC's default data directory in the `sosberlin/js7` JOC image (`JETTY_BASE`).
pub const DEFAULT_JOC_DATA_DIRECTORY: &str = "/var/sos-berlin.com/js7/joc";

/// JOC cluster timings in whole seconds, as written to `joc.properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JocTimings {
    pub polling_interval_s: u64,
    pub heart_beat_exceeded_interval_s: u64,
}

impl WorkloadSpec {
    /// JOC's data directory, defaulted.
    pub fn joc_data_directory(&self) -> &str {
        self.joc_data_directory
            .as_deref()
            .unwrap_or(DEFAULT_JOC_DATA_DIRECTORY)
    }

    /// The timings written to `joc.properties`: the spec's, else fitted to
    /// the lease (poll = renew interval rounded up, at least 1 s; timeout =
    /// TTL rounded up, at least two polls).
    pub fn joc_timings(&self, lease: &LeaseSpec) -> Result<JocTimings, String> {
        let ceil_s = |d: Duration| d.as_millis().div_ceil(1000).max(1) as u64;
        let polling_interval_s = match &self.joc_cluster.polling_interval {
            Some(text) => ceil_s(parse_duration(text)?),
            None => ceil_s(lease.renew_interval()?),
        };
        let heart_beat_exceeded_interval_s = match &self.joc_cluster.heart_beat_exceeded_interval {
            Some(text) => ceil_s(parse_duration(text)?),
            None => ceil_s(lease.ttl()?).max(2 * polling_interval_s),
        };
        Ok(JocTimings {
            polling_interval_s,
            heart_beat_exceeded_interval_s,
        })
    }
}
