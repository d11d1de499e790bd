//! Prometheus metrics of one sidecar, served at `/metrics`.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::js7::look::Look;
use crate::lease::Role;

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
    /// 1 while this member is active in failsafe mode.
    pub failsafe: Gauge,
    /// What is read at scrape time (see [`LiveGauges`]).
    live: Arc<Mutex<Live>>,
}

/// The values behind [`LiveGauges`].
#[derive(Debug, Default)]
struct Live {
    /// When this member's last successful lease write (renew or take-over)
    /// was published. Shown only while `role` is 1: a failsafe holder stays
    /// active with the database down, and its renew age grows.
    renewed_at: Option<Instant>,
    /// js7: JOC's view at the last look.
    joc: Option<Look>,
}

/// Gauges that are computed at each scrape or are absent while they mean
/// nothing (Prometheus' convention: no series rather than NaN, so that
/// `max by (cluster)` and alerts see only members the value applies to).
#[derive(Debug)]
struct LiveGauges {
    live: Arc<Mutex<Live>>,
    role: Gauge,
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<N>,
) -> Result<(), std::fmt::Error> {
    if let Some(value) = value {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

impl Collector for LiveGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (renewed_at, joc) = match self.live.lock() {
            Ok(live) => (live.renewed_at, live.joc.clone()),
            Err(_) => return Ok(()),
        };
        let renewed_at = renewed_at.filter(|_| self.role.get() == 1);
        gauge(
            &mut encoder,
            "lease_renew_age_seconds",
            "Seconds since the active member's last successful lease renew (it grows in failsafe mode); absent while this member is not active",
            renewed_at.map(|at| at.elapsed().as_secs_f64()),
        )?;
        let Some(joc) = joc else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "joc_active",
            "js7: 1 while JOC's JOC_CLUSTER.MEMBER_ID names this member, at the sidecar's last look",
            Some(i64::from(joc.names_me)),
        )?;
        gauge(
            &mut encoder,
            "joc_cluster_heartbeat_age_seconds",
            "js7: age of JOC_CLUSTER.HEART_BEAT (JOC's active member) by the database's clock, at the last look; absent while JOC has no active member",
            joc.cluster_age_s,
        )?;
        gauge(
            &mut encoder,
            "joc_instance_heartbeat_age_seconds",
            "js7: age of this member's JOC_INSTANCES.HEART_BEAT by the database's clock, at the last look; absent while JOC has no row for it",
            joc.own_age_s,
        )
    }
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
            failsafe: Gauge::default(),
            live: Arc::default(),
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
        registry.register(
            "failsafe",
            "1 while this member stays active in failsafe mode (the database is down for everyone)",
            metrics.failsafe.clone(),
        );
        registry.register_collector(Box::new(LiveGauges {
            live: metrics.live.clone(),
            role: metrics.role.clone(),
        }));
        (metrics, registry)
    }

    fn live(&self, change: impl FnOnce(&mut Live)) {
        if let Ok(mut live) = self.live.lock() {
            change(&mut live);
        }
    }

    /// js7: what the last look at JOC's tables showed.
    pub fn joc_looked(&self, look: &Look) {
        self.live(|live| live.joc = Some(look.clone()));
    }

    /// js7: JOC's tables could not be read: JOC's gauges go until the
    /// next successful look.
    pub fn joc_unread(&self) {
        self.live(|live| live.joc = None);
    }

    /// When this member's last successful lease write was seen.
    pub fn renewed_at(&self, at: Instant) {
        self.live(|live| live.renewed_at = Some(at));
    }

    /// Follows the elector's role for `lease_renew_age_seconds`: each
    /// successful renew publishes the holder's role with a later deadline.
    pub async fn track_renews(self, mut roles: watch::Receiver<Role>) {
        let mut renews = Renews::default();
        loop {
            let role = *roles.borrow_and_update();
            if renews.seen(role) {
                self.renewed_at(Instant::now());
            }
            if roles.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Tells a renew from the roles the elector publishes.
#[derive(Debug, Default)]
struct Renews {
    until: Option<Instant>,
}

impl Renews {
    /// Whether `role` shows a renew: a new deadline (or the take-over's
    /// first one).
    fn seen(&mut self, role: Role) -> bool {
        match role {
            Role::Active { until, .. } if self.until != Some(until) => {
                self.until = Some(until);
                true
            }
            Role::Active { .. } => false,
            Role::Standby => {
                self.until = None;
                false
            }
        }
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
        assert!(text.contains("joc_ha_failsafe{"), "{text}");
        for absent in ["joc_ha_lease_renew_age_seconds", "joc_ha_joc_"] {
            assert!(
                !text.contains(absent),
                "{absent} before it means anything:\n{text}"
            );
        }
    }

    #[test]
    fn the_live_gauges_appear_once_they_mean_something() {
        let (metrics, registry) = Metrics::new("js7", "joc", "joc-0");
        metrics.renewed_at(Instant::now());
        let text = encode(&registry);
        assert!(
            !text.contains("joc_ha_lease_renew_age_seconds"),
            "not while standby: {text}"
        );
        metrics.role.set(1);
        metrics.joc_looked(&Look {
            member_id: Some("joc-1:bb".into()),
            cluster_age_s: None,
            own_age_s: Some(4),
            names_me: false,
        });
        let text = encode(&registry);
        for line in [
            "joc_ha_joc_active{namespace=\"js7\",cluster=\"joc\",member=\"joc-0\"} 0",
            "joc_ha_joc_instance_heartbeat_age_seconds{namespace=\"js7\",cluster=\"joc\",member=\"joc-0\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.contains("joc_ha_lease_renew_age_seconds{"), "{text}");
        assert!(
            !text.contains("joc_ha_joc_cluster_heartbeat_age_seconds"),
            "no JOC_CLUSTER row, no series: {text}"
        );
    }

    #[test]
    fn a_new_deadline_is_a_renew() {
        let t0 = Instant::now();
        let s = std::time::Duration::from_secs;
        let active = |until| Role::Active {
            term: 3,
            until: t0 + s(until),
        };
        let mut renews = Renews::default();
        // (role seen, a renew)
        let table = [
            (Role::Standby, false),
            (active(10), true),
            (active(10), false),
            (active(12), true),
            (Role::Standby, false),
            (active(12), true),
        ];
        for (step, (role, renew)) in table.into_iter().enumerate() {
            assert_eq!(renews.seen(role), renew, "step {step}: {role:?}");
        }
    }
}
