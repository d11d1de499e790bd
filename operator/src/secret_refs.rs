//! Which JocClusters a Secret change concerns: the operator watches
//! Secrets (metadata only) and reconciles at once every JocCluster that
//! names the changed one, so a fixed password takes effect without waiting
//! for the periodic requeue. Pure; the watch is in `controller.rs`.

use std::sync::Arc;

use joc_ha_crds::JocCluster;
use joc_ha_crds::v1alpha1::WorkloadMode;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

/// The Secrets a JocCluster reads, as `validate` in `controller.rs` does:
/// the database Secret, the database CA Secret (TLS), the license (js7).
pub fn referenced_secrets(cluster: &JocCluster) -> Vec<&str> {
    let spec = &cluster.spec;
    let mut names = vec![spec.database.secret_ref.name.as_str()];
    if let Some(ca) = spec
        .database
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
    {
        names.push(ca.name.as_str());
    }
    if let (Some(license), WorkloadMode::Js7) = (&spec.license, spec.workload.mode) {
        names.push(license.secret_ref.name.as_str());
    }
    names
}

/// The JocClusters in `namespace` that name Secret `secret`.
pub fn clusters_naming(
    clusters: &[Arc<JocCluster>],
    namespace: &str,
    secret: &str,
) -> Vec<ObjectRef<JocCluster>> {
    clusters
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| referenced_secrets(c).contains(&secret))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_cluster;

    fn cluster(name: &str, namespace: &str, spec: serde_json::Value) -> Arc<JocCluster> {
        let mut cluster = test_cluster(spec);
        cluster.metadata.name = Some(name.to_owned());
        cluster.metadata.namespace = Some(namespace.to_owned());
        Arc::new(cluster)
    }

    #[test]
    fn a_secret_maps_to_the_clusters_of_its_namespace_that_name_it() {
        let tls = serde_json::json!({"database": {"type": "postgresql",
            "secretRef": {"name": "shared-db"},
            "tls": {"mode": "verify-full", "caSecretRef": {"name": "db-ca"}}}});
        let licensed = serde_json::json!({"license": {"secretRef": {"name": "js7-license"}}});
        let generic_licensed = serde_json::json!({"workload": {"mode": "generic"},
            "license": {"secretRef": {"name": "js7-license"}}});
        let clusters = [
            cluster("a", "js7", serde_json::json!({})), // database Secret joc-db
            cluster("b", "js7", tls),
            cluster("c", "js7", licensed),
            cluster("d", "other", serde_json::json!({})),
            cluster("e", "js7", generic_licensed),
        ];
        // (namespace, Secret, the clusters reconciled)
        let cases: [(&str, &str, &[&str]); 7] = [
            ("js7", "joc-db", &["a", "c", "e"]),
            ("other", "joc-db", &["d"]),
            ("js7", "shared-db", &["b"]),
            ("js7", "db-ca", &["b"]),
            // Generic mode reads no license.
            ("js7", "js7-license", &["c"]),
            ("js7", "unrelated", &[]),
            ("third", "joc-db", &[]),
        ];
        for (namespace, secret, want) in cases {
            let got: Vec<String> = clusters_naming(&clusters, namespace, secret)
                .into_iter()
                .map(|r| {
                    assert_eq!(r.namespace.as_deref(), Some(namespace));
                    r.name
                })
                .collect();
            assert_eq!(got, want, "{namespace}/{secret}");
        }
    }
}
