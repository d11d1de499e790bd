//! How healthy this member's JOC is: its container's run, the heartbeat of
//! the JOC process now running (fact 22), and the heartbeat its sidecar
//! keeps while JOC waits for its first Controller (fact 9).

use std::time::Duration;

use super::{InstanceStamp, JocView};

/// `JocSecurityLevel`'s number (INV_JS_INSTANCES) for the name JOC writes
/// into JOC_INSTANCES: LOW 0, MEDIUM 1, HIGH 2.
pub fn security_level_number(name: &str) -> Option<i64> {
    match name.to_ascii_uppercase().as_str() {
        "LOW" => Some(0),
        "MEDIUM" => Some(1),
        "HIGH" => Some(2),
        _ => None,
    }
}

/// Whether this member's sidecar writes JOC's cluster heartbeat for its
/// JOC now (docs/joc-facts.md fact 9). The active JOC of a fresh install
/// blocks in the start of its services until a Controller is registered
/// and writes no heartbeat meanwhile; JOC's other instances would then take
/// over one after another and block the same way, and when the user
/// registers the Controller every blocked one starts services at once.
/// So while its JOC is active and waits — and, once a Controller is there,
/// until that JOC writes its own heartbeat again, for at most `grace` —
/// the sidecar keeps the heartbeat, and no other JOC takes over. The
/// container running is required; a JVM dead inside it is restarted by the
/// liveness probe and comes back as this same active member.
pub fn keeps_waiting_heart_beat(
    view: &JocView,
    me: &str,
    run: &ContainerRun,
    kept_until_controller: Option<Duration>,
    own_fresh: bool,
    grace: Duration,
) -> bool {
    if !view.confirms(me) || !matches!(run, ContainerRun::Running(_)) {
        return false;
    }
    if view.waits_for_controller(me) {
        return true;
    }
    kept_until_controller.is_some_and(|since| since <= grace) && !own_fresh
}

/// The run of one container of a pod (its `joc` container, or its
/// sidecar), from the pod's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRun {
    /// No status for it (the pod is not seen yet, or it has no such
    /// container): for this pod's own `joc` container, the sidecar's own
    /// start stands for the run's start.
    Unknown,
    /// Not running (terminated, waiting to restart): none of its processes.
    Stopped,
    /// Running; the text names this run (restart count and start time, as
    /// the kubelet reports them, compared and never parsed).
    Running(String),
}

/// What this member's sidecar saw of its own `JOC_INSTANCES` row when it
/// first saw the current run of its `joc` container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBaseline {
    /// The run it was taken for (None: [`ContainerRun::Unknown`]).
    pub run: Option<String>,
    /// The row then (None: no row).
    pub stamp: Option<InstanceStamp>,
    /// The row changed since: the process now running wrote it.
    pub proven: bool,
}

impl HealthBaseline {
    /// Whether it was taken for this run of the JOC container: if not, the
    /// health it proved is void ([`own_health`] starts afresh).
    pub fn is_for(&self, run: &ContainerRun) -> bool {
        match run {
            ContainerRun::Stopped => false,
            ContainerRun::Unknown => self.run.is_none(),
            ContainerRun::Running(id) => self.run.as_deref() == Some(id.as_str()),
        }
    }
}

/// Whether this member's JOC counts as healthy (ready for the lease, pod
/// Ready), and the baseline to keep for the next look.
///
/// docs/joc-facts.md fact 22: after a crash the previous JVM's heartbeat
/// stays fresh for up to the exceeded interval, while the new JVM needs
/// 10–20 s or more before it heartbeats. So a heartbeat counts only once the
/// row changed after the sidecar saw the container's current run start:
/// clock-free, at the price of one JOC poll after a sidecar restart. A new
/// run (restart count or start time changed) takes a new baseline; a
/// stopped container is never healthy. What remains is the time between the
/// container's restart and the kubelet reporting it.
pub fn own_health(
    baseline: Option<&HealthBaseline>,
    run: &ContainerRun,
    view: &JocView,
    me: &str,
) -> (bool, Option<HealthBaseline>) {
    let run = match run {
        ContainerRun::Stopped => return (false, None),
        ContainerRun::Unknown => None,
        ContainerRun::Running(id) => Some(id.clone()),
    };
    let stamp = view.instance(me).map(|i| i.stamp.clone());
    let Some(baseline) = baseline.filter(|b| b.run == run) else {
        return (
            false,
            Some(HealthBaseline {
                run,
                stamp,
                proven: false,
            }),
        );
    };
    let proven = baseline.proven || (stamp.is_some() && stamp != baseline.stamp);
    let healthy = proven && view.is_ready_member(me);
    (
        healthy,
        Some(HealthBaseline {
            proven,
            ..baseline.clone()
        }),
    )
}
