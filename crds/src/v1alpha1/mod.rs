//! `JocCluster` of `joc-ha.dev/v1alpha1`: a JOC Cockpit cluster with one
//! active member, standbys, and optional API-server instances.

mod containers;
mod database;
mod joc;
mod lease;
mod placement;
mod status;

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use containers::{LogFormat, LogVolumeSpec, PortsSpec, PullPolicy, ResourcesSpec, SidecarSpec};
pub use database::{DatabaseKind, DatabaseSpec, DatabaseTls, SecretReference, TlsMode};
pub use joc::{
    ConfigSource, DEFAULT_JOC_DATA_DIRECTORY, JocClusterTimings, JocTimings, LicenseSpec,
    SecurityLevel, WorkloadMode, WorkloadSpec,
};
pub use lease::{LeaseSpec, parse_duration};
pub use placement::{
    PodDisruptionBudgetSpec, SchedulingSpec, ServiceKind, ServiceSpec, SpreadMode,
};
pub use status::{JocClusterStatus, MemberStatus, Phase, SwitchoverResult, SwitchoverStatus};

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
    printcolumn = r#"{"name":"Fenced","type":"string","jsonPath":".status.fenced","description":"Members fenced by kubectl joc fence"}"#,
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

#[cfg(test)]
mod tests;
