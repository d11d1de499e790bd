//! `JocCluster` of `joc-ha.dev/v1alpha1`: a JOC Cockpit cluster with one
//! active member, standbys, and optional API-server instances.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A JOC Cockpit cluster: `members` instances of which exactly one is active
/// (it runs JOC's Proxy and History services and receives the traffic of the
/// Service `<name>`), the others standby, plus optional API-server instances.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "joc-ha.dev",
    version = "v1alpha1",
    kind = "JocCluster",
    plural = "jocclusters",
    shortname = "joc",
    namespaced,
    // The bound and pattern are MAX_CLUSTER_NAME_LEN and CLUSTER_NAME_PATTERN
    // of names.rs (a test checks they agree).
    validation = Rule::new("size(self.metadata.name) <= 48").message("metadata.name must be at most 48 characters: the API servers' StatefulSet <name>-api labels its pods controller-revision-hash=<name>-api-<hash of up to 10 characters>, and a label value has at most 63 characters"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, ending with a letter or digit; no '.'): it names the cluster's Services"),
    status = "JocClusterStatus",
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeMember","description":"The member the Service routes to"}"#,
    printcolumn = r#"{"name":"Members","type":"string","jsonPath":".status.memberSummary","description":"Ready members / desired members"}"#,
    printcolumn = r#"{"name":"API Servers","type":"string","jsonPath":".status.apiServerSummary","description":"Ready API servers / desired API servers"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JocClusterSpec {
    /// Number of cluster members (JOC instances taking part in fail-over).
    /// Exactly one is active at a time; the others are standbys.
    #[serde(default = "default_members")]
    #[schemars(range(min = 1, max = 9))]
    pub members: i32,

    /// Number of API-server instances: they serve only JOC's REST API, are
    /// never active and are not subject to cluster management.
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub api_servers: i32,

    /// The JOC Cockpit container image, e.g. `sosberlin/js7:joc-2-8-1`. The
    /// operator reads JOC's version from the tag (`joc-2-8-1`, `joc-2.8.1`)
    /// and warns (condition `JocVersion`) on a release it does not know;
    /// known: 2.7, 2.8, 2.9.
    #[schemars(length(min = 1))]
    pub image: String,

    /// When to pull the images: `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Secrets holding registry credentials for the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The joc-ha sidecar container of every member.
    #[serde(default)]
    pub sidecar: SidecarSpec,

    /// Ports JOC Cockpit listens on.
    #[serde(default)]
    pub ports: PortsSpec,

    /// The database shared by all members: JOC's own tables and the joc-ha lease.
    pub database: DatabaseSpec,

    /// Your own JOC configuration files (`joc.properties`, `hibernate.cfg.xml`).
    /// js7 mode: the keys of your `joc.properties` are merged over the
    /// image's (the operator's cluster keys and `ordering` still win), and
    /// your `hibernate.cfg.xml` replaces the one written from the database
    /// Secret (it must name the same database). generic mode: both files are
    /// mounted as they are at JOC's resources folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSource>,

    /// JS7's cluster license (js7 mode). Without it JOC never fails over by
    /// itself and a switch-over leaves no member running JOC's services
    /// (SOS: a cluster needs a license), so with more than one member the
    /// operator warns (condition `Licensed`) and the sidecars never ask JOC
    /// to switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseSpec>,

    /// JOC's `security_level` (`low`, `medium`, `high`), written to
    /// `joc-settings.properties`; by default the image's value, else `low`.
    /// Controllers must be registered at the same level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_level: Option<SecurityLevel>,

    /// JVM options of JOC (`RUN_JS_JAVA_OPTIONS`, added by the image's
    /// entrypoint to its own). By default `-Xmx` is 60 % of the cockpit
    /// container's memory limit (`resources.cockpit.limits.memory`); with no
    /// limit, the image's defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_options: Option<String>,

    /// Timings of the lease that elects the active member.
    #[serde(default)]
    pub lease: LeaseSpec,

    /// What runs in the cockpit container: JS7 JOC Cockpit (default), whose
    /// own active member the sidecars keep in agreement with the lease, or a
    /// generic active/standby application told its role by the sidecar.
    #[serde(default)]
    pub workload: WorkloadSpec,

    /// Compute resources of the two containers of each member pod.
    #[serde(default)]
    pub resources: ResourcesSpec,

    /// Where member pods may run. By default members prefer distinct nodes.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// The Services in front of the active member and the API servers.
    #[serde(default)]
    pub service: ServiceSpec,

    /// The PodDisruptionBudget of the members.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// A persistent volume per member for JOC's logs; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_volume: Option<LogVolumeSpec>,
}

fn default_members() -> i32 {
    2
}

/// Image pull policy, as for any container.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The sidecar container.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// The joc-ha sidecar image; defaults to the image matching the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Log format of the sidecar: `plain` or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Log line format.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// JOC Cockpit's ports, passed to the image's entrypoint as
/// `RUN_JS_HTTP_PORT` / `RUN_JS_HTTPS_PORT`.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.https)").message("ports.https is not supported yet: joc-ha runs JOC with HTTP only (RUN_JS_HTTPS_PORT empty, no keystore); remove ports.https and terminate TLS in front of the Services (Ingress, Gateway or a service mesh)"))]
pub struct PortsSpec {
    /// HTTP port of JOC Cockpit (`RUN_JS_HTTP_PORT`).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
    /// Reserved for HTTPS with a keystore from a Secret; refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub https: Option<i32>,
}

impl Default for PortsSpec {
    fn default() -> Self {
        Self {
            http: default_http_port(),
            https: None,
        }
    }
}

fn default_http_port() -> i32 {
    4446
}

/// The shared database.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The database product: `postgresql`, `mysql` or `mariadb`; `sqlite`
    /// for single-host evaluation only.
    #[serde(rename = "type")]
    pub kind: DatabaseKind,
    /// The Secret holding the connection: either a key `url`
    /// (`postgres://user:password@host:5432/db`, `mysql://...`), or the keys
    /// `host`, `port`, `database`, `user` and `password`.
    pub secret_ref: SecretReference,
    /// TLS to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DatabaseTls>,
    /// Whether JOC creates its tables at start (`create_db_tables` in
    /// `joc.properties`); default true. Turn it off when a DBA creates them.
    #[serde(default = "default_true")]
    pub create_tables: bool,
}

fn default_true() -> bool {
    true
}

/// Database products JOC Cockpit and the lease support in a JocCluster.
/// `sqlite` is for single-host evaluation only (the demo): every member must
/// run on the host that holds the file.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Postgresql,
    Mysql,
    Mariadb,
    Sqlite,
}

/// A Secret in the JocCluster's namespace.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// TLS settings for the database connection.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTls {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub mode: TlsMode,
    /// Secret with the CA certificate (PEM) under the key `ca.crt`, for the
    /// verifying modes. It is mounted into the sidecar and JOC: the sidecar
    /// verifies with it, and `hibernate.cfg.xml` names it to JOC's JDBC
    /// driver (PostgreSQL `sslrootcert`, MariaDB `serverSslCert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretReference>,
}

/// How the database connection uses TLS.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

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

/// Lease timings, as Go-style durations (`5s`, `1500ms`).
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.renewInterval).getMilliseconds() * 3 <= duration(self.ttl).getMilliseconds()").message("lease.renewInterval must be at most a third of lease.ttl, so that a holder renews at least twice before its lease can expire"))]
pub struct LeaseSpec {
    /// How long a lease holds without renewal, judged by the database clock.
    /// A frozen or cut-off active member is replaced after this long.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')").message("lease.ttl must be between 1s and 10m"))]
    pub ttl: String,
    /// How often the holder renews the lease and standbys heartbeat.
    #[serde(default = "default_renew_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms')").message("lease.renewInterval must be at least 100ms"))]
    pub renew_interval: String,
}

impl Default for LeaseSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            renew_interval: default_renew_interval(),
        }
    }
}

fn default_ttl() -> String {
    "5s".to_owned()
}

fn default_renew_interval() -> String {
    "1s".to_owned()
}

impl LeaseSpec {
    /// The TTL as a duration, or the text that could not be read.
    pub fn ttl(&self) -> Result<Duration, String> {
        parse_duration(&self.ttl)
    }

    /// The renew interval as a duration, or the text that could not be read.
    pub fn renew_interval(&self) -> Result<Duration, String> {
        parse_duration(&self.renew_interval)
    }
}

/// Reads the Go-style durations the CRD admits: a sequence of
/// `<number><unit>` with units `ms`, `s` and `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 5s, 1500ms or 1m30s");
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else {
            return Err(invalid());
        };
        total += value * unit_ms;
        rest = &rest[len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 / 2.0 {
        return Err(invalid());
    }
    Ok(Duration::from_micros((total * 1_000.0).round() as u64))
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

/// Resources of the containers of a member pod.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// Requests and limits of the JOC Cockpit container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cockpit: Option<ResourceRequirements>,
    /// Requests and limits of the sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<ResourceRequirements>,
}

/// Placement of member and API-server pods.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules; when set they replace the default spreading of members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How strictly members are spread over distinct nodes ("different
    /// servers"): `preferred` (default) or `required`.
    #[serde(default)]
    pub spread_members: SpreadMode,
}

/// Anti-affinity strength between members.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpreadMode {
    #[default]
    Preferred,
    Required,
}

/// The Services of the cluster.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type of the Services `<name>` and `<name>-api`: `ClusterIP` (default),
    /// `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub kind: ServiceKind,
    /// Annotations of the Services `<name>` and `<name>-api`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service types offered.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceKind {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::ClusterIP => "ClusterIP",
            ServiceKind::NodePort => "NodePort",
            ServiceKind::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The members' PodDisruptionBudget.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create a PodDisruptionBudget allowing one member down at a time.
    /// Defaults to on when members > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A per-member persistent volume for JOC's logs.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogVolumeSpec {
    /// Size of each member's log volume, e.g. `1Gi`.
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// What the operator and the sidecars observed.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JocClusterStatus {
    /// `Pending`, `Running`, `Degraded` or `Failed`, in short; see conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The pod holding the lease: the one member the Service `<name>` routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_member: Option<String>,
    /// The lease term (fencing token) of the active member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_term: Option<i64>,
    /// Each member pod with its readiness and role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Ready members.
    #[serde(default)]
    pub ready_members: i32,
    /// `ready/desired` members, for `kubectl get joc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_summary: Option<String>,
    /// Ready API-server instances.
    #[serde(default)]
    pub ready_api_servers: i32,
    /// `ready/desired` API servers, for `kubectl get joc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_summary: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Available`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The outcome of the last switch-over request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<SwitchoverStatus>,
}

/// Summary state of a JocCluster.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Degraded,
    Failed,
}

/// One member pod.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// `active` or `standby`, from the pod's `joc-ha.dev/role` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A switch-over request and its outcome.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    /// The member that was active when the request was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The requested target: a pod name or `any`.
    pub to: String,
    /// When the request was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Time>,
    /// When the request was completed or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Time>,
    /// `Completed` or `Rejected`.
    pub result: SwitchoverResult,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a switch-over.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchoverResult {
    Completed,
    Rejected,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_name_rules_use_the_bound_of_names_rs() {
        use crate::names::{CLUSTER_NAME_PATTERN, MAX_CLUSTER_NAME_LEN};
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(JocCluster::crd()).expect("crd");
        let rules =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"];
        let rules: Vec<&str> = rules
            .as_array()
            .expect("root rules")
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert!(
            rules.contains(&format!("size(self.metadata.name) <= {MAX_CLUSTER_NAME_LEN}").as_str()),
            "{rules:?}"
        );
        assert!(
            rules.contains(
                &format!("self.metadata.name.matches('{CLUSTER_NAME_PATTERN}')").as_str()
            ),
            "{rules:?}"
        );
    }

    #[test]
    fn durations_in_the_formats_the_crd_admits() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        for bad in ["", "5", "s", "5h", "-1s", "5 s", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let spec: JocClusterSpec = serde_json::from_value(serde_json::json!({
            "image": "sosberlin/js7:joc-2-8-1",
            "database": {"type": "postgresql", "secretRef": {"name": "db"}}
        }))
        .expect("minimal spec");
        assert_eq!(spec.members, 2);
        assert_eq!(spec.api_servers, 0);
        assert_eq!(spec.ports.http, 4446);
        assert!(
            spec.database.create_tables,
            "JOC creates its tables by default"
        );
        assert_eq!(spec.license, None);
        assert_eq!(spec.security_level, None);
        assert_eq!(spec.lease.ttl(), Ok(Duration::from_secs(5)));
        assert_eq!(spec.lease.renew_interval(), Ok(Duration::from_secs(1)));
        assert_eq!(spec.workload.mode, WorkloadMode::Js7);
        assert_eq!(
            spec.workload.joc_data_directory(),
            "/var/sos-berlin.com/js7/joc"
        );
    }

    #[test]
    fn joc_timings_follow_the_lease_unless_set() {
        let mut workload = WorkloadSpec::default();
        let lease = LeaseSpec::default();
        assert_eq!(
            workload.joc_timings(&lease),
            Ok(JocTimings {
                polling_interval_s: 1,
                heart_beat_exceeded_interval_s: 5
            })
        );
        let slow = LeaseSpec {
            ttl: "10s".into(),
            renew_interval: "2500ms".into(),
        };
        assert_eq!(
            workload.joc_timings(&slow),
            Ok(JocTimings {
                polling_interval_s: 3,
                heart_beat_exceeded_interval_s: 10
            })
        );
        workload.joc_cluster = JocClusterTimings {
            polling_interval: Some("30s".into()),
            heart_beat_exceeded_interval: Some("1m".into()),
        };
        assert_eq!(
            workload.joc_timings(&lease),
            Ok(JocTimings {
                polling_interval_s: 30,
                heart_beat_exceeded_interval_s: 60
            })
        );
    }

    #[test]
    fn unknown_database_type_is_refused() {
        let result: Result<JocClusterSpec, _> = serde_json::from_value(serde_json::json!({
            "image": "x",
            "database": {"type": "oracle", "secretRef": {"name": "db"}}
        }));
        assert!(result.is_err());
    }
}
