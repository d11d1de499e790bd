//! Prometheus metrics of one sidecar, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Every metric the sidecar exports; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    /// 1 while this member is active, else 0.
    pub role: Gauge,
    /// The lease term this member holds (0 when standby).
    pub lease_term: Gauge,
    /// Time a successful renew statement took.
    pub renew_latency: Histogram,
    /// Times this member became active.
    pub takeovers: Counter,
    /// Switch-overs this member handled, by result (completed, rejected).
    pub switchovers: Family<ResultLabel, Counter>,
    /// Failed database statements.
    pub database_errors: Counter,
    /// Requests sent to the Kubernetes API server (a watch counts once, when
    /// it is opened).
    pub kube_api_requests: Counter,
    /// js7: times this sidecar fenced its JOC JVM, by why.
    pub joc_fenced: Family<WhyLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhyLabel {
    pub why: String,
}

impl Metrics {
    /// Registers the metrics with the cluster's labels.
    pub fn new(namespace: &str, cluster: &str, member: &str) -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix_and_labels(
            "joc_ha",
            [
                ("namespace".into(), namespace.to_owned().into()),
                ("cluster".into(), cluster.to_owned().into()),
                ("member".into(), member.to_owned().into()),
            ]
            .into_iter(),
        );
        let metrics = Metrics {
            role: Gauge::default(),
            lease_term: Gauge::default(),
            renew_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            takeovers: Counter::default(),
            switchovers: Family::default(),
            database_errors: Counter::default(),
            kube_api_requests: Counter::default(),
            joc_fenced: Family::default(),
        };
        registry.register(
            "role",
            "1 while this member is active",
            metrics.role.clone(),
        );
        registry.register(
            "lease_term",
            "Lease term (fencing token) this member holds; 0 when standby",
            metrics.lease_term.clone(),
        );
        registry.register(
            "renew_latency_seconds",
            "Duration of successful lease renewals",
            metrics.renew_latency.clone(),
        );
        registry.register(
            "takeovers",
            "Times this member became active",
            metrics.takeovers.clone(),
        );
        registry.register(
            "switchovers",
            "Switch-over requests handled, by result",
            metrics.switchovers.clone(),
        );
        registry.register(
            "database_errors",
            "Failed lease database statements",
            metrics.database_errors.clone(),
        );
        registry.register(
            "kube_api_requests",
            "Requests sent to the Kubernetes API server",
            metrics.kube_api_requests.clone(),
        );
        registry.register(
            "joc_fenced",
            "js7: times this sidecar SIGKILLed its JOC JVM, by why",
            metrics.joc_fenced.clone(),
        );
        (metrics, registry)
    }
}

/// The registry in Prometheus' text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_documented_names_with_cluster_labels() {
        let (metrics, registry) = Metrics::new("js7", "joc", "joc-0");
        metrics.role.set(1);
        metrics.takeovers.inc();
        metrics
            .switchovers
            .get_or_create(&ResultLabel {
                result: "completed".into(),
            })
            .inc();
        let text = encode(&registry);
        for name in [
            "joc_ha_role{",
            "joc_ha_lease_term{",
            "joc_ha_renew_latency_seconds_bucket{",
            "joc_ha_takeovers_total{",
            "joc_ha_switchovers_total{",
            "joc_ha_database_errors_total{",
            "joc_ha_kube_api_requests_total{",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.contains(r#"cluster="joc""#));
        assert!(text.contains(r#"result="completed""#));
    }
}
