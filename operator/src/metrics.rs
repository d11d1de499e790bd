//! The operator's Prometheus metrics, served at `/metrics`.

use std::time::Duration;

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

/// Every metric the operator exports; cheap to clone (shared values).
#[derive(Clone)]
pub struct Metrics {
    /// 1 while this replica holds the leader Lease and reconciles.
    pub leader: Gauge,
    /// Reconciliations by result (`success`, `error`).
    pub reconciliations: Family<ResultLabel, Counter>,
    /// How long one reconciliation takes.
    pub reconcile_duration: Histogram,
}

impl Metrics {
    pub fn new() -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix("joc_ha_operator");
        let metrics = Metrics {
            leader: Gauge::default(),
            reconciliations: Family::default(),
            // 1 ms … ~16 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        };
        registry.register(
            "leader",
            "1 when this replica reconciles",
            metrics.leader.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciliations of JocClusters by result",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            metrics.reconcile_duration.clone(),
        );
        (metrics, registry)
    }

    /// Counts one reconciliation and its duration.
    pub fn reconciled(&self, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciliations
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }
}

/// The text exposition format.
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
    fn exports_the_documented_names() {
        let (metrics, registry) = Metrics::new();
        metrics.leader.set(1);
        metrics.reconciled(true, Duration::from_millis(20));
        metrics.reconciled(false, Duration::from_millis(20));
        let text = encode(&registry);
        assert!(text.contains("joc_ha_operator_leader 1"), "{text}");
        assert!(
            text.contains("joc_ha_operator_reconciliations_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("joc_ha_operator_reconciliations_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("joc_ha_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
