//! How every reader of this API judges a pod, so that the operator's status,
//! the sidecars and `kubectl joc` agree on what "ready" means.

use k8s_openapi::api::core::v1::Pod;

/// Whether the pod's `Ready` condition is `True` (what the Service's
/// endpoints and `status.members[].ready` go by).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `value` can name a pod (a DNS subdomain: lowercase labels of
/// letters, digits and `-`, at most 253 characters).
pub fn is_pod_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(conditions: &[(&str, &str)]) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| PodCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..PodCondition::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_a_true_ready_condition_counts() {
        assert!(is_ready(&pod(&[
            ("PodScheduled", "True"),
            ("Ready", "True")
        ])));
        assert!(!is_ready(&pod(&[("Ready", "False")])));
        assert!(!is_ready(&pod(&[("ContainersReady", "True")])));
        assert!(!is_ready(&pod(&[])));
        assert!(!is_ready(&Pod::default()));
    }
}
