//! The chart's Grafana dashboard and alert rules ask only for metrics that
//! the sidecar or the operator export, and the chart renders the dashboard
//! as the ConfigMap Grafana's sidecar loads.

use std::collections::BTreeSet;
use std::path::PathBuf;

use joc_ha_tests::controlplane::ControlPlane;
use joc_ha_tests::operator::helm_template;
use serde::Deserialize as _;

fn chart_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/joc-ha")
        .join(path)
}

/// Every series name a registry's text encoding can produce: a counter
/// `x` is scraped as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

fn exported_by_joc_ha() -> BTreeSet<String> {
    let (sidecar_metrics, sidecar) = joc_ha_sidecar::metrics::Metrics::new("ns", "joc", "joc-0");
    let (operator_metrics, operator) = joc_ha_operator::metrics::Metrics::new();
    // A family shows in the encoding once it has a sample.
    sidecar_metrics
        .switchovers
        .get_or_create(&joc_ha_sidecar::metrics::ResultLabel {
            result: "completed".into(),
        })
        .inc();
    // The holder's renew age and JOC's view exist once they mean something.
    sidecar_metrics.role.set(1);
    sidecar_metrics.renewed_at(tokio::time::Instant::now());
    sidecar_metrics.joc_looked(&joc_ha_sidecar::js7::look::Look {
        member_id: Some("joc-0:aa".into()),
        cluster_age_s: Some(1),
        own_age_s: Some(1),
        names_me: true,
    });
    operator_metrics.reconciled(false, std::time::Duration::from_millis(3));
    let mut names = exported(&joc_ha_sidecar::metrics::encode(&sidecar));
    names.extend(exported(&joc_ha_operator::metrics::encode(&operator)));
    names
}

/// The `joc_ha_*` metric names a PromQL expression reads.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("joc_ha_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_panel_and_alert_asks_for_an_exported_metric() -> anyhow::Result<()> {
    let exported = exported_by_joc_ha();
    assert!(exported.contains("joc_ha_role"), "{exported:?}");
    assert!(
        exported.contains("joc_ha_operator_reconciliations_total"),
        "{exported:?}"
    );

    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        chart_file("dashboards/joc-ha.json"),
    )?)?;
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut asked = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metrics_in(expr);
            assert!(
                !names.is_empty(),
                "panel {title:?} reads no joc-ha metric: {expr}"
            );
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {title:?} asks for {name}, which nothing exports"
                );
                asked.insert(name);
            }
        }
    }
    // What the dashboard is for: the active member, fail-overs, switch-overs,
    // the lease's renewals and time since the last, failsafe, JOC's
    // heartbeats and active member, the operator's reconcile errors.
    for needed in [
        "joc_ha_role",
        "joc_ha_takeovers_total",
        "joc_ha_switchovers_total",
        "joc_ha_renew_latency_seconds_bucket",
        "joc_ha_lease_renew_age_seconds",
        "joc_ha_failsafe",
        "joc_ha_joc_cluster_heartbeat_age_seconds",
        "joc_ha_joc_instance_heartbeat_age_seconds",
        "joc_ha_joc_active",
        "joc_ha_operator_reconciliations_total",
    ] {
        assert!(asked.contains(needed), "no panel shows {needed}");
    }

    let rules = std::fs::read_to_string(chart_file("templates/monitoring.yaml"))?;
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 2, "{exprs:?}");
    for expr in exprs {
        let names = metrics_in(expr);
        assert!(!names.is_empty(), "alert reads no joc-ha metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "an alert asks for {name}, which nothing exports: {expr}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_metric_names_of_an_expression() {
    assert_eq!(
        metrics_in(
            "sum by (le) (rate(joc_ha_renew_latency_seconds_bucket{a=\"b\"}[5m])) / joc_ha_role"
        ),
        ["joc_ha_renew_latency_seconds_bucket", "joc_ha_role"]
    );
    assert!(metrics_in("up == 0").is_empty());
    let text = "# HELP joc_ha_takeovers Times.\n# TYPE joc_ha_takeovers counter\n# TYPE joc_ha_renew_latency_seconds histogram\n# TYPE joc_ha_role gauge\n";
    let names = exported(text);
    assert!(names.contains("joc_ha_takeovers_total") && !names.contains("joc_ha_takeovers"));
    assert!(names.contains("joc_ha_renew_latency_seconds_count") && names.contains("joc_ha_role"));
}

#[tokio::test]
async fn the_chart_renders_the_dashboard_for_grafanas_sidecar() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    let off = helm_template(&plane, "joc-ha", "joc-ha-system", &[]).await?;
    assert!(
        !off.contains("grafana_dashboard"),
        "the dashboard is off by default"
    );
    let on = helm_template(
        &plane,
        "joc-ha",
        "joc-ha-system",
        &[
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            "metrics.grafanaDashboard.namespace=monitoring",
        ],
    )
    .await?;
    let config_map = serde_yaml::Deserializer::from_str(&on)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "joc-ha-operator-dashboard")
        .expect("a ConfigMap joc-ha-operator-dashboard");
    assert_eq!(config_map["metadata"]["namespace"], "monitoring");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = config_map["data"]["joc-ha.json"]
        .as_str()
        .expect("the dashboard");
    let rendered: serde_json::Value = serde_json::from_str(json)?;
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(chart_file(
        "dashboards/joc-ha.json",
    ))?)?;
    assert_eq!(
        rendered, file,
        "the ConfigMap holds the dashboard as it is in the chart"
    );
    Ok(())
}
