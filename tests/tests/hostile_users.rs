//! What a hostile or clumsy user can do to a running cluster, done as they
//! would (real API server, the chart's admission policies, real sidecars),
//! and what joc-ha answers: a refusal where they look (kubectl's answer, an
//! Event, a condition), and never two pods behind the Service.

use std::time::Duration;

use joc_ha_crds::names::{LABEL_CLUSTER, LABEL_COMPONENT, LABEL_ROLE, ROLE_ACTIVE, ROLE_STANDBY};
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions, WorkloadMode};
use joc_ha_tests::wait::wait_for_ok;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const UP: Duration = Duration::from_secs(120);
const POLICY: Duration = Duration::from_secs(30);

async fn cluster() -> anyhow::Result<(Stack, String, String)> {
    let stack = Stack::start(StackOptions {
        backend: Backend::Postgres,
        members: 2,
        workload: WorkloadMode::Generic,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let active = stack.endpoints.wait_single(None, UP).await?;
    let standby = stack
        .member_other_than(&active)
        .ok_or_else(|| anyhow::anyhow!("no standby"))?;
    Ok((stack, active, standby))
}

fn labels(labels: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"labels": labels}}))
}

/// The API server's refusal of `result`, or why it was not one.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String, String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(status.message),
        other => Err(format!("not refused: {other:?}")),
    }
}

async fn role_of(stack: &Stack, pod: &str) -> anyhow::Result<Option<String>> {
    Ok(stack
        .pods()
        .get(pod)
        .await?
        .labels()
        .get(LABEL_ROLE)
        .cloned())
}

/// Issue 19, case 5: an admin labelling a standby `role=active` by hand put
/// two pods behind the Service until the holder stripped the label. Now the
/// role-label guard refuses every hand-made write of the role label, the
/// lease-term and failsafe annotations, and pods created with the label,
/// and says what to do instead; nothing changes.
#[tokio::test]
async fn a_hand_made_role_label_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (stack, active, standby) = cluster().await?;
    let pods = stack.pods();
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    // Policies take effect a moment after they are created; dry runs pass
    // through admission like real requests.
    wait_for_ok(
        "the role-label guard to be in force",
        POLICY,
        Duration::from_millis(200),
        || async {
            refusal(
                pods.patch(
                    &standby,
                    &dry_run,
                    &labels(json!({LABEL_ROLE: ROLE_ACTIVE})),
                )
                .await,
            )
        },
    )
    .await?;

    let message = refusal(
        pods.patch(
            &standby,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: ROLE_ACTIVE})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    assert!(
        message.contains("written only by the joc-ha sidecars of its cluster")
            && message.contains("kubectl annotate joccluster joc joc-ha.dev/switchover-to="),
        "the refusal says who writes the label and what to do instead: {message}"
    );

    // Taking the active pod out of the Service by hand is refused too.
    refusal(
        pods.patch(
            &active,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: null})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    refusal(
        pods.patch(
            &active,
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: ROLE_STANDBY})),
        )
        .await,
    )
    .map_err(anyhow::Error::msg)?;
    // The lease-term and failsafe marks go with the label.
    for annotation in ["joc-ha.dev/lease-term", "joc-ha.dev/failsafe"] {
        refusal(
            pods.patch(
                &standby,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {annotation: "99"}}})),
            )
            .await,
        )
        .map_err(|e| anyhow::anyhow!("{annotation}: {e}"))?;
    }
    // A pod created with the cluster's labels and `role=active` would be
    // routed to at once.
    let intruder: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "intruder", "labels": {
            LABEL_CLUSTER: "joc", LABEL_COMPONENT: "member", LABEL_ROLE: ROLE_ACTIVE}},
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x:1"}]}
    }))?;
    refusal(pods.create(&PostParams::default(), &intruder).await).map_err(anyhow::Error::msg)?;
    // Other labels stay the user's own.
    pods.patch(
        &standby,
        &PatchParams::default(),
        &labels(json!({"example.com/owner": "ops"})),
    )
    .await?;

    assert_eq!(
        role_of(&stack, &active).await?.as_deref(),
        Some(ROLE_ACTIVE)
    );
    assert_eq!(
        role_of(&stack, &standby).await?.as_deref(),
        Some(ROLE_STANDBY)
    );
    assert_eq!(stack.labeled_active().await?, vec![active.clone()]);
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        vec![active]
    );
    stack.endpoints.assert_never_two();
    Ok(())
}
