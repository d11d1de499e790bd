//! js7 mode: JOC's `joc.properties` for members and API servers. The pods'
//! init container copies the one for its kind next to the
//! `hibernate.cfg.xml` it writes from the database Secret (the password
//! never enters a ConfigMap).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{joc_config_map_name, pod};
use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::labels::child_meta;
use crate::error::{Error, Result};

/// Whether the operator writes JOC's configuration: js7 mode without the
/// user's own files (`spec.config`).
pub fn writes_joc_config(cluster: &JocCluster) -> bool {
    cluster.spec.workload.mode == WorkloadMode::Js7 && cluster.spec.config.is_none()
}

/// `None` when the operator does not write JOC's configuration.
pub fn joc_config_map(cluster: &JocCluster) -> Result<Option<ConfigMap>> {
    if !writes_joc_config(cluster) {
        return Ok(None);
    }
    let timings = cluster
        .spec
        .workload
        .joc_timings(&cluster.spec.lease)
        .map_err(Error::InvalidSpec)?;
    // Keys from SOS's JocClusterConfiguration; JOC marks an API server by
    // `cluster_id = api` (its installer's --as-api-server).
    let properties = |cluster_id: &str| {
        format!(
            "# Written by joc-ha-operator for JocCluster {namespace}/{name}.\n\
             # JOC's own cluster timings, fitted to the joc-ha lease\n\
             # (JOC's defaults: 30 s poll, 60 s timeout).\n\
             cluster_id = {cluster_id}\n\
             cluster_polling_interval = {poll}\n\
             cluster_heart_beat_exceeded_interval = {exceeded}\n",
            namespace = cluster.namespace().unwrap_or_default(),
            name = cluster.name_any(),
            poll = timings.polling_interval_s,
            exceeded = timings.heart_beat_exceeded_interval_s,
        )
    };
    Ok(Some(ConfigMap {
        metadata: child_meta(cluster, joc_config_map_name(&cluster.name_any()))?,
        data: Some(
            [
                (pod::JOC_PROPERTIES.to_owned(), properties("joc")),
                (pod::API_SERVER_JOC_PROPERTIES.to_owned(), properties("api")),
            ]
            .into(),
        ),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::build::test_cluster as cluster;

    #[test]
    fn timings_fitted_to_the_lease_and_api_servers_marked() {
        let map = joc_config_map(&cluster(serde_json::json!({})))
            .expect("builds")
            .expect("js7 default");
        let data = map.data.expect("data");
        let members = &data[pod::JOC_PROPERTIES];
        assert!(members.contains("cluster_id = joc\n"));
        assert!(members.contains("cluster_polling_interval = 1\n"));
        assert!(members.contains("cluster_heart_beat_exceeded_interval = 5\n"));
        assert!(data[pod::API_SERVER_JOC_PROPERTIES].contains("cluster_id = api\n"));
        assert!(!members.contains("password"));
        assert_eq!(map.metadata.name.as_deref(), Some("joc-joc-config"));
    }

    #[test]
    fn joc_defaults_when_asked_and_none_in_generic_mode_or_with_own_files() {
        let map = joc_config_map(&cluster(serde_json::json!({"workload": {"jocCluster": {
            "pollingInterval": "30s", "heartBeatExceededInterval": "60s"}}})))
        .expect("builds")
        .expect("js7");
        let data = map.data.expect("data");
        assert!(data[pod::JOC_PROPERTIES].contains("cluster_polling_interval = 30\n"));
        assert!(data[pod::JOC_PROPERTIES].contains("cluster_heart_beat_exceeded_interval = 60\n"));
        let generic = cluster(serde_json::json!({"workload": {"mode": "generic"}}));
        assert!(joc_config_map(&generic).expect("builds").is_none());
        let own = cluster(serde_json::json!({"config": {"configMapName": "mine"}}));
        assert!(joc_config_map(&own).expect("builds").is_none());
    }
}
