//! What the sidecar reads of JOC's cluster tables (this file), how healthy
//! this member's JOC is (`health.rs`), and what the lease holder does about
//! it (`holder.rs`); pure, unit-tested (`tests/`).

use std::time::Duration;

/// The row `JOC_CLUSTER` (id `cluster`): JOC's active member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub member_id: String,
    /// Whole seconds since `HEART_BEAT`, by the database's UTC clock.
    pub heart_beat_age_s: i64,
    pub switch_member_id: Option<String>,
    pub switch_heart_beat_age_s: Option<i64>,
}

/// A row of `JOC_INSTANCES`: one JOC instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRow {
    pub member_id: String,
    /// Whole seconds since `HEART_BEAT`, by the database's UTC clock.
    pub heart_beat_age_s: i64,
    pub api_server: bool,
    /// `STARTED_AT` and `HEART_BEAT` as the database holds them.
    pub stamp: InstanceStamp,
    /// `SECURITY_LEVEL` as JOC wrote it (`LOW`, `MEDIUM`, `HIGH`).
    pub security_level: Option<String>,
}

/// `STARTED_AT` and `HEART_BEAT` of an instance row as text, only ever
/// compared with an earlier read, never parsed: a change proves that a JOC
/// process wrote the row since, without trusting any clock (JOC writes
/// `STARTED_AT` from the JVM's clock, docs/joc-facts.md fact 18, in a zone
/// that JOC-2206 changed between releases).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceStamp {
    pub started_at: Option<String>,
    pub heart_beat: Option<String>,
}

/// JOC's cluster state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JocView {
    /// None while no JOC instance is active (no row).
    pub cluster: Option<ClusterRow>,
    pub instances: Vec<InstanceRow>,
    /// JOC's `cluster_heart_beat_exceeded_interval`.
    pub exceeded_interval_s: i64,
    /// Registered Controllers (`INV_JS_INSTANCES`) per security level
    /// number, if counted.
    pub controllers: Option<Vec<(i64, i64)>>,
}

impl JocView {
    pub fn new(
        cluster: Option<ClusterRow>,
        instances: Vec<InstanceRow>,
        exceeded_interval: Duration,
    ) -> JocView {
        JocView {
            cluster,
            instances,
            exceeded_interval_s: exceeded_interval.as_secs() as i64,
            controllers: None,
        }
    }

    /// With the Controllers counted per security level number.
    pub fn with_controllers(mut self, per_level: Vec<(i64, i64)>) -> JocView {
        self.controllers = Some(per_level);
        self
    }

    /// docs/joc-facts.md fact 9 (JocCluster.java `readCurrentDbInfos`): no
    /// Controller of `member_id`'s security level is registered yet, so
    /// that JOC, once active, blocks in the start of its services and
    /// writes no heartbeat at all until the user registers one in its GUI.
    /// False when not counted or the level is unknown.
    pub fn waits_for_controller(&self, member_id: &str) -> bool {
        let Some(per_level) = &self.controllers else {
            return false;
        };
        let Some(level) = self
            .instance(member_id)
            .and_then(|i| i.security_level.as_deref())
            .and_then(security_level_number)
        else {
            return false;
        };
        !per_level.iter().any(|&(l, n)| l == level && n > 0)
    }

    /// JOC's active member is `member_id`, waiting for its first
    /// Controller, and its cluster heartbeat is fresh: kept by its sidecar
    /// ([`keeps_waiting_heart_beat`]), which JOC's other instances take,
    /// as they would JOC's own, for an active member alive.
    pub fn is_waiting_active(&self, member_id: &str) -> bool {
        self.confirms(member_id)
            && self.waits_for_controller(member_id)
            && self
                .cluster
                .as_ref()
                .is_some_and(|c| !self.exceeded(c.heart_beat_age_s))
    }

    /// JOC's rule (`JocCluster.isHeartBeatExceeded`): strictly more than
    /// the interval, in whole seconds.
    fn exceeded(&self, age_s: i64) -> bool {
        age_s > self.exceeded_interval_s
    }

    /// JOC's active member, if any.
    pub fn active_member(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.member_id.as_str())
    }

    /// A cluster member (not an API server) whose JOC heartbeat is fresh:
    /// the only kind that may take or receive the lease, and the only kind
    /// JOC's `switch_member` accepts as target.
    pub fn is_ready_member(&self, member_id: &str) -> bool {
        self.instances.iter().any(|i| {
            i.member_id == member_id && !i.api_server && !self.exceeded(i.heart_beat_age_s)
        })
    }

    /// How old (whole seconds) a heartbeat may be before it counts as
    /// silent: two polls short of JOC's timeout, at least two polls. A
    /// silent active member is handed on from ([`holder_step`]); a silent
    /// former active member is fenced once JOC runs another.
    pub fn silent_after_s(&self, polling_interval_s: i64) -> i64 {
        silent_after_s(self.exceeded_interval_s, polling_interval_s)
    }

    /// `member_id`'s instance heartbeat is older than
    /// [`JocView::silent_after_s`] (or it has no row).
    pub fn is_silent(&self, member_id: &str, polling_interval_s: i64) -> bool {
        self.instance(member_id)
            .is_none_or(|i| i.heart_beat_age_s > self.silent_after_s(polling_interval_s))
    }

    /// Another member (not `member_id`, not an API server) whose JOC
    /// heartbeat is fresh: a JOC that would take over from `member_id`.
    pub fn has_ready_member_besides(&self, member_id: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.member_id != member_id && self.is_ready_member(&i.member_id))
    }

    /// The `JOC_INSTANCES` row of `member_id`.
    pub fn instance(&self, member_id: &str) -> Option<&InstanceRow> {
        self.instances.iter().find(|i| i.member_id == member_id)
    }

    /// Whether `member_id` is an API-server instance.
    pub fn is_api_server(&self, member_id: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.member_id == member_id && i.api_server)
    }

    /// JOC's record says `member_id` is active (`JOC_CLUSTER.MEMBER_ID`).
    /// After a switch the new member's services start at its own next poll,
    /// within one polling interval; waiting for that too would only keep
    /// the Service empty longer, since the old member stopped its services
    /// before it wrote the new `MEMBER_ID`.
    pub fn confirms(&self, member_id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.member_id == member_id)
    }

    /// A switch request to `member_id` that JOC will still execute.
    pub fn switch_pending_to(&self, member_id: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            c.switch_member_id.as_deref() == Some(member_id)
                && c.switch_heart_beat_age_s
                    .is_some_and(|age| !self.exceeded(age))
        })
    }
}

/// [`JocView::silent_after_s`] for JOC's timeout `exceeded_interval_s`.
pub fn silent_after_s(exceeded_interval_s: i64, polling_interval_s: i64) -> i64 {
    let poll = polling_interval_s.max(1);
    (exceeded_interval_s - 2 * poll).max(2 * poll)
}

mod health;
mod holder;
#[cfg(test)]
mod tests;

pub use health::{
    ContainerRun, HealthBaseline, keeps_waiting_heart_beat, own_health, security_level_number,
};
pub use holder::{
    HolderStep, StaleSwitchRequest, holder_step, stale_switch_request, unlicensed_holder_step,
    waiting_holder_step,
};
