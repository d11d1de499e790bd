//! `kubectl joc switchover`: writes the switch-over annotation and, with
//! `--wait`, watches the JocCluster until a sidecar records the outcome.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{ANNOTATION_SWITCHOVER_TO, SWITCHOVER_TO_ANY};
use joc_ha_crds::v1alpha1::{SwitchoverResult, SwitchoverStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

use crate::error::PluginError;

/// What became of the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Completed(SwitchoverStatus),
    Rejected(SwitchoverStatus),
}

/// Whether the cluster now records the outcome of the request for `to`
/// written after `before` was the last recorded one. A sidecar replaces
/// `status.lastSwitchover` only with a later request's outcome, and names
/// the chosen pod in `to` when `any` was asked for (a rejection keeps
/// `any`).
pub fn judge(before: Option<&SwitchoverStatus>, to: &str, cluster: &JocCluster) -> Option<Verdict> {
    let last = cluster.status.as_ref()?.last_switchover.as_ref()?;
    if Some(last) == before {
        return None;
    }
    if to != SWITCHOVER_TO_ANY && last.to != to {
        return None;
    }
    Some(match last.result {
        SwitchoverResult::Completed => Verdict::Completed(last.clone()),
        SwitchoverResult::Rejected => Verdict::Rejected(last.clone()),
    })
}

/// The member pods a request may name (from the status, which the operator
/// keeps current).
pub fn check_target(cluster: &JocCluster, to: &str) -> Result<(), PluginError> {
    if to == SWITCHOVER_TO_ANY {
        return Ok(());
    }
    let members: Vec<&str> = cluster
        .status
        .as_ref()
        .map(|s| s.members.iter().map(|m| m.name.as_str()).collect())
        .unwrap_or_default();
    // Without a status yet the sidecars judge the name themselves.
    if members.is_empty() || members.contains(&to) {
        return Ok(());
    }
    Err(PluginError::NotAMember {
        name: cluster.metadata.name.clone().unwrap_or_default(),
        to: to.to_owned(),
        members: members.join(", "),
    })
}

pub async fn run(
    api: &Api<JocCluster>,
    namespace: &str,
    name: &str,
    to: &str,
    wait: Option<Duration>,
) -> Result<String, PluginError> {
    let cluster = api
        .get(name)
        .await
        .map_err(|e| PluginError::from_kube(e, namespace, name))?;
    check_target(&cluster, to)?;
    let before = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_switchover.clone());
    let written = Instant::now();
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_SWITCHOVER_TO: to}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| PluginError::from_kube(e, namespace, name))?;
    let Some(bound) = wait else {
        return Ok(format!(
            "switch-over of {namespace}/{name} to {to} requested; `kubectl joc status {name}` shows the outcome"
        ));
    };
    let verdict = tokio::time::timeout(bound, watch_verdict(api, name, before.as_ref(), to))
        .await
        .map_err(|_| PluginError::Timeout(bound))??;
    let seen = written.elapsed();
    match verdict {
        Verdict::Completed(s) => Ok(format!(
            "switched over {namespace}/{name}: {} → {} ({})",
            s.from.as_deref().unwrap_or("?"),
            s.to,
            took(&s, seen)
        )),
        Verdict::Rejected(s) => Err(PluginError::Rejected(
            s.message.unwrap_or_else(|| "no reason given".into()),
        )),
    }
}

async fn watch_verdict(
    api: &Api<JocCluster>,
    name: &str,
    before: Option<&SwitchoverStatus>,
    to: &str,
) -> Result<Verdict, PluginError> {
    let mut stream = std::pin::pin!(watcher::watch_object(api.clone(), name));
    while let Some(event) = stream.next().await {
        match event {
            Ok(Some(cluster)) => {
                if let Some(verdict) = judge(before, to, &cluster) {
                    return Ok(verdict);
                }
            }
            Ok(None) => {
                return Err(PluginError::Api(format!(
                    "the JocCluster {name} was deleted while waiting"
                )));
            }
            // The watcher retries by itself; a lasting error ends in the timeout.
            Err(_) => continue,
        }
    }
    Err(PluginError::Api("the watch ended".into()))
}

/// "0.8 s" from the sidecar's own times, and how long this command waited.
fn took(s: &SwitchoverStatus, seen: Duration) -> String {
    let sidecar = match (&s.requested, &s.completed) {
        (Some(r), Some(c)) => {
            let ms = c.0.duration_since(r.0).as_millis_f64();
            format!("handled in {:.1} s, ", ms.max(0.0) / 1000.0)
        }
        _ => String::new(),
    };
    format!("{sidecar}seen after {:.1} s", seen.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use joc_ha_crds::JocClusterStatus;
    use joc_ha_crds::v1alpha1::MemberStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(to: &str, result: SwitchoverResult, at_s: i64) -> SwitchoverStatus {
        let t = |s| Time(jiff::Timestamp::from_second(s).expect("valid"));
        SwitchoverStatus {
            from: Some("joc-0".into()),
            to: to.into(),
            requested: Some(t(at_s)),
            completed: Some(t(at_s + 1)),
            result,
            message: Some(format!("{to} {result:?}")),
        }
    }

    fn cluster(last: Option<SwitchoverStatus>, members: &[&str]) -> JocCluster {
        let mut c: JocCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster",
            "metadata": {"name": "joc", "namespace": "js7"},
            "spec": {"image": "i", "database": {"type": "postgresql", "secretRef": {"name": "db"}}}
        }))
        .expect("a JocCluster");
        c.status = Some(JocClusterStatus {
            last_switchover: last,
            members: members
                .iter()
                .map(|n| MemberStatus {
                    name: (*n).into(),
                    ready: true,
                    role: None,
                    fenced: false,
                })
                .collect(),
            ..JocClusterStatus::default()
        });
        c
    }

    #[test]
    fn the_verdict_is_the_first_new_record_for_the_request() {
        use SwitchoverResult::*;
        let old = record("joc-1", Completed, 100);
        // (case, recorded before the request, recorded now, the verdict)
        type Case<'a> = (
            &'a str,
            Option<&'a SwitchoverStatus>,
            Option<SwitchoverStatus>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            ("nothing recorded yet", None, None, None),
            (
                "the old record is still there",
                Some(&old),
                Some(old.clone()),
                None,
            ),
            (
                "a record for another target",
                Some(&old),
                Some(record("joc-2", Completed, 200)),
                None,
            ),
            (
                "completed",
                Some(&old),
                Some(record("joc-1", Completed, 200)),
                Some("completed"),
            ),
            (
                "rejected",
                Some(&old),
                Some(record("joc-1", Rejected, 200)),
                Some("rejected"),
            ),
            (
                "first ever",
                None,
                Some(record("joc-1", Completed, 200)),
                Some("completed"),
            ),
        ];
        for (case, before, last, want) in cases {
            let got = judge(*before, "joc-1", &cluster(last.clone(), &[])).map(|v| match v {
                Verdict::Completed(_) => "completed",
                Verdict::Rejected(_) => "rejected",
            });
            assert_eq!(got, *want, "{case}");
        }
        // `any` is recorded with the chosen pod when completed, as `any` when rejected.
        let any = judge(
            Some(&old),
            "any",
            &cluster(Some(record("joc-2", Completed, 200)), &[]),
        );
        assert!(matches!(any, Some(Verdict::Completed(s)) if s.to == "joc-2"));
        let any = judge(
            Some(&old),
            "any",
            &cluster(Some(record("any", Rejected, 200)), &[]),
        );
        assert!(matches!(any, Some(Verdict::Rejected(_))));
    }

    #[test]
    fn a_target_must_be_a_member_or_any() {
        let c = cluster(None, &["joc-0", "joc-1"]);
        assert!(check_target(&c, "joc-1").is_ok());
        assert!(check_target(&c, "any").is_ok());
        let error = check_target(&c, "joc-api-0").expect_err("not a member");
        assert!(
            error.to_string().contains("members: joc-0, joc-1"),
            "{error}"
        );
        // Before the operator wrote a status, the sidecars judge.
        assert!(check_target(&cluster(None, &[]), "whatever").is_ok());
    }
}
