//! What can go wrong, each saying what the user can do about it.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "cannot reach the Kubernetes API: {0}\n  check `kubectl config current-context` and that `kubectl get joc` works"
    )]
    Config(String),
    #[error(
        "JocCluster {namespace}/{name} not found\n  list them with `kubectl get joc -A`, or pass -n <namespace>"
    )]
    NotFound { namespace: String, name: String },
    #[error(
        "not allowed: {0}\n  `kubectl auth can-i patch jocclusters` says whether your account may; `status` needs get/list on jocclusters, pods and events"
    )]
    Forbidden(String),
    #[error("the Kubernetes API refused: {0}")]
    Api(String),
    #[error(
        "{to:?} is not a member of {name}\n  members: {members}; or use --to any for the best ready standby"
    )]
    NotAMember {
        name: String,
        to: String,
        members: String,
    },
    #[error(
        "no outcome within {0:?}: the request may still be handled\n  see `kubectl joc status` and `kubectl describe joc`; a sidecar must be running to handle it"
    )]
    Timeout(Duration),
    #[error(
        "pod {namespace}/{pod} not found\n  list the members with `kubectl joc status <cluster>`, or pass -n <namespace>"
    )]
    PodNotFound { namespace: String, pod: String },
    #[error(
        "{pod} is not a member of a JocCluster: {why}\n  only member pods take part in the lease; API servers never do"
    )]
    NotAMemberPod { pod: String, why: String },
    #[error(
        "{pod} is the active member and no other member is Ready to take the lease (or all are fenced)\n  fencing it would leave the cluster without an active member: unfence or start another member first (`kubectl joc status`)"
    )]
    NoOtherMember { pod: String },
    #[error("{error}\n  fix or remove it: kubectl annotate joc {name} joc-ha.dev/fenced-members-")]
    MalformedFencing { error: String, name: String },
    #[error("the switch-over was rejected: {0}")]
    Rejected(String),
    #[error(
        "the restart is not done after {after:?} ({last}): it goes on\n  the operator replaces one pod at a time and waits for it to be Ready; see `kubectl joc status` and the pods' events"
    )]
    RestartTimeout { after: Duration, last: String },
}

impl PluginError {
    /// The process's exit code: 2 for a rejected switch-over, 3 for a
    /// timeout, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            PluginError::Rejected(_) => 2,
            PluginError::Timeout(_) | PluginError::RestartTimeout { .. } => 3,
            _ => 1,
        }
    }

    pub fn from_kube(error: kube::Error, namespace: &str, name: &str) -> PluginError {
        match &error {
            kube::Error::Api(status) if status.code == 404 => PluginError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            kube::Error::Api(status) if status.code == 403 => {
                PluginError::Forbidden(status.message.clone())
            }
            _ => PluginError::Api(error.to_string()),
        }
    }
}
