//! Where pods run, the Services in front of them, their disruption budget.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
