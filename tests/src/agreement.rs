//! js7 mode on the harness: whether the lease holder, the `active` label,
//! the active Service's endpoint and JOC's own active member
//! (`JOC_CLUSTER.MEMBER_ID`) name the same pod, and the faults that part
//! them. Used by the js7 end-to-end tests and the `bench-js7` benchmark.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{AssertSqlSafe, Row};

use crate::stack::Stack;

/// What each party says is active, at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub lease_holder: Option<String>,
    /// The lease term (fencing token): +1 on every change of holder.
    pub term: i64,
    pub labeled: Vec<String>,
    pub endpoints: Vec<String>,
    /// The pod (host name) of JOC's active member.
    pub joc: Option<String>,
}

impl Parties {
    /// The pod all four agree on.
    pub fn agreed(&self) -> Option<&str> {
        let holder = self.lease_holder.as_deref()?;
        (self.labeled == [holder]
            && self.endpoints == [holder]
            && self.joc.as_deref() == Some(holder))
        .then_some(holder)
    }
}

/// Agreement on one pod under one lease term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub pod: String,
    pub term: i64,
    /// How long the wait took.
    pub took: Duration,
}

/// The lease row's holder and term of the stack's cluster.
pub async fn lease_holder(stack: &Stack) -> Result<(Option<String>, i64)> {
    let mut conn = crate::joc::connect(&stack.database_url).await?;
    let cluster_id = format!("{}/{}", stack.options.namespace, stack.options.name);
    let placeholder = if stack.database_url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT holder, term FROM joc_ha_lease WHERE cluster_id = {placeholder}"
    )))
    .bind(cluster_id)
    .fetch_optional(&mut conn)
    .await
    .context("reading the lease row")?;
    Ok(match row {
        Some(row) => (row.try_get::<Option<String>, _>(0)?, row.try_get(1)?),
        None => (None, 0),
    })
}

/// Members registered in the lease (`joc_ha_member`).
pub async fn lease_members(stack: &Stack) -> Result<Vec<String>> {
    let mut conn = crate::joc::connect(&stack.database_url).await?;
    let rows = sqlx::query("SELECT member FROM joc_ha_member")
        .fetch_all(&mut conn)
        .await
        .context("reading the lease members")?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}

/// One look at every party.
pub async fn parties(stack: &Stack) -> Result<Parties> {
    let joc = crate::joc::joc_active_member(&stack.database_url)
        .await?
        .map(|id| host_of(&id).to_owned());
    let (lease_holder, term) = lease_holder(stack).await?;
    Ok(Parties {
        lease_holder,
        term,
        labeled: stack.labeled_active().await?,
        endpoints: stack.endpoints.current().into_iter().collect(),
        joc,
    })
}

/// The host name part of a JOC member id (`<host>:<sha256>`).
pub use joc_ha_sidecar::js7::hostname_of as host_of;

/// Waits until all parties agree on one pod under a lease term above
/// `after_term` (every change of holder, even back to the same pod after a
/// crash, raises the term). The error shows the last look.
pub async fn wait_agreement(
    stack: &Stack,
    after_term: Option<i64>,
    timeout: Duration,
) -> Result<Agreement> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        match parties(stack).await {
            Ok(look) => {
                if let Some(pod) = look.agreed()
                    && after_term.is_none_or(|t| look.term > t)
                {
                    return Ok(Agreement {
                        pod: pod.to_owned(),
                        term: look.term,
                        took: started.elapsed(),
                    });
                }
                last = Some(look);
            }
            Err(error) => tracing::debug!(%error, "look at the parties failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "no agreement under a lease term above {after_term:?} within {timeout:?}; last look: {last:?}"
    )
}

/// A failed pod: its sidecar and JOC processes are killed (the kubelet
/// restarts them, as it would restart crashed containers).
pub async fn kill_pod_processes(stack: &Stack, pod: &str) -> Result<()> {
    let sidecar = stack.sidecar(pod).context("sidecar process")?;
    let joc = stack.cockpit(pod).context("JOC process")?;
    let (a, b) = tokio::join!(sidecar.kill(), joc.kill());
    a?;
    b?;
    Ok(())
}
