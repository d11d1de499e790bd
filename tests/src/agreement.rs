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

/// The lease row's holder of the stack's cluster.
pub async fn lease_holder(stack: &Stack) -> Result<Option<String>> {
    let mut conn = crate::joc::connect(&stack.database_url).await?;
    let cluster_id = format!("{}/{}", stack.options.namespace, stack.options.name);
    let placeholder = if stack.database_url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT holder FROM joc_ha_lease WHERE cluster_id = {placeholder}"
    )))
    .bind(cluster_id)
    .fetch_optional(&mut conn)
    .await
    .context("reading the lease row")?;
    Ok(match row {
        Some(row) => row.try_get::<Option<String>, _>(0)?,
        None => None,
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
    Ok(Parties {
        lease_holder: lease_holder(stack).await?,
        labeled: stack.labeled_active().await?,
        endpoints: stack.endpoints.current().into_iter().collect(),
        joc,
    })
}

/// The host name part of a JOC member id (`<host>:<sha256>`).
pub use joc_ha_sidecar::js7::hostname_of as host_of;

/// Waits until all parties agree on one pod other than `not`; returns it
/// and the time waited. The error shows the last look.
pub async fn wait_agreement(
    stack: &Stack,
    not: Option<&str>,
    timeout: Duration,
) -> Result<(String, Duration)> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        match parties(stack).await {
            Ok(look) => {
                if let Some(pod) = look.agreed()
                    && Some(pod) != not
                {
                    return Ok((pod.to_owned(), started.elapsed()));
                }
                last = Some(look);
            }
            Err(error) => tracing::debug!(%error, "look at the parties failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no agreement (other than {not:?}) within {timeout:?}; last look: {last:?}")
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
