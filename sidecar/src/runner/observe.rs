//! What the runner records from each elector status besides deciding:
//! renew latency, database health and errors, and the Event for a refused
//! login or a database another cluster owns.

use std::sync::atomic::Ordering;
use std::time::Duration;

use joc_ha_crds::names::reason;

use tokio::time::Instant;
use tracing::warn;

use super::Runner;
use crate::lease::{ElectorStatus, LeaseError};

/// How often a refused database login is published again while it lasts
/// (well within the operator's 120 s freshness of such Events).
const LOGIN_EVENT_PERIOD: Duration = Duration::from_secs(30);

impl Runner {
    /// Metrics and health from the elector's status.
    pub(super) fn observe(&mut self, status: &ElectorStatus) {
        if let Some(latency) = status.last_renew_latency
            && Some(latency) != self.last_renew_latency
        {
            self.metrics.renew_latency.observe(latency.as_secs_f64());
            self.last_renew_latency = Some(latency);
        }
        self.health
            .database_ok
            .store(status.connected, Ordering::Relaxed);
        self.database_owned |= status.connected;
        let error = status.last_error.as_ref().map(|e| e.to_string());
        if error.is_some() && error != self.last_database_error {
            self.metrics.database_errors.inc();
        }
        self.last_database_error = error;
        // The operator shows a refused login, or a database that belongs to
        // another cluster, as Degraded while the Event is fresh (its series
        // is renewed here every 30 s while it lasts).
        let refusal = match &status.last_error {
            Some(e @ LeaseError::LoginRefused { .. }) => Some((reason::DATABASE_LOGIN_FAILED, e)),
            Some(e @ LeaseError::DatabaseInUse { .. }) => Some((reason::DATABASE_IN_USE, e)),
            _ => None,
        };
        if let Some((why, refused)) = refusal
            && self
                .last_login_event
                .is_none_or(|t| t.elapsed() >= LOGIN_EVENT_PERIOD)
            && let Some(cluster) = self.clusters.state().into_iter().next()
        {
            self.last_login_event = Some(Instant::now());
            let api = self.api.clone();
            let note = refused.to_string();
            tokio::spawn(async move {
                if let Err(error) = api.event(&cluster, true, why, note).await {
                    warn!(%error, "cannot publish an Event");
                }
            });
        }
    }
}
