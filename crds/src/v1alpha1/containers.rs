//! The containers of a pod: images, the sidecar, ports, resources, the log
//! volume.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
