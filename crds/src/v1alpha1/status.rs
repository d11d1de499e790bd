//! What the operator and the sidecars observed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// The fenced members (`kubectl joc fence`), comma-separated, for
    /// `kubectl get joc`; absent while none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<String>,
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
    /// Named in `joc-ha.dev/fenced-members` (`kubectl joc fence`): it never
    /// takes or receives the lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
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
