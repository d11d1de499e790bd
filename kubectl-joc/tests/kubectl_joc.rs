//! `kubectl joc` against a running cluster (real control plane, real
//! sidecars on PostgreSQL): status shows what the API holds, a switch-over
//! with --wait returns its outcome, and bad requests get exit codes that say
//! which.

use std::process::Output;
use std::time::Duration;

use joc_ha_crds::joc_view::JocViewNote;
use joc_ha_crds::names::{ANNOTATION_JOC_VIEW, reason};
use joc_ha_tests::agreement::wait_agreement;
use joc_ha_tests::stack::{Stack, StackOptions, WorkloadMode};
use joc_ha_tests::wait::wait_for;
use serde_json::Value;

const UP: Duration = Duration::from_secs(120);

async fn kubectl_joc(stack: &Stack, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-joc"));
    command
        .args(args)
        .args(["-n", &stack.options.namespace])
        .env("KUBECONFIG", stack.plane.kubeconfig_path());
    Ok(tokio::time::timeout(UP, command.output()).await??)
}

/// Two generic members, both Ready, and the one active endpoint.
async fn two_members() -> anyhow::Result<(Stack, String)> {
    let stack = Stack::start(StackOptions {
        members: 2,
        workload: WorkloadMode::Generic,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let active = stack.endpoints.wait_single(None, UP).await?;
    Ok((stack, active))
}

/// `kubectl joc status -o json` of the stack's cluster, if it succeeds.
async fn status_json(stack: &Stack) -> Option<Value> {
    let name = stack.options.name.clone();
    let out = kubectl_joc(stack, &["status", &name, "-o", "json"])
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn status_and_a_waited_switchover_through_the_plugin() -> anyhow::Result<()> {
    let (stack, active) = two_members().await?;
    let standby = stack.member_other_than(&active).expect("two members");
    let name = stack.options.name.clone();

    // status -o json: the active member and both members with their roles,
    // once the operator has written it.
    let json = wait_for(
        "kubectl joc status to show the active member",
        UP,
        Duration::from_millis(300),
        || async {
            let json = status_json(&stack).await?;
            (json["activeMember"] == active.as_str()
                && json["members"].as_array().is_some_and(|m| m.len() == 2))
            .then_some(json)
        },
    )
    .await?;
    let members = json["members"].as_array().expect("members");
    let role_of = |pod: &str| {
        members
            .iter()
            .find(|m| m["name"] == pod)
            .map(|m| m["role"].clone())
    };
    assert_eq!(role_of(&active), Some(Value::from("active")), "{json}");
    assert!(
        members.iter().all(|m| m["joc"].is_null()),
        "generic mode has no JOC view: {json}"
    );
    assert!(json["leaseTerm"].as_i64().is_some_and(|t| t >= 1), "{json}");
    let table = kubectl_joc(&stack, &["status", &name]).await?;
    let table = text(&table.stdout);
    assert!(
        table.contains(&format!("active member {active}")),
        "{table}"
    );
    assert!(table.contains("MEMBERS"), "{table}");

    // switchover --wait: exit 0 once the outcome is recorded, and by then the
    // Service routes to the target alone.
    let out = kubectl_joc(
        &stack,
        &[
            "switchover",
            &name,
            "--to",
            &standby,
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    let returned = jiff::Timestamp::now();
    assert!(
        out.status.success(),
        "switchover failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    assert!(said.contains(&format!("{active} → {standby}")), "{said}");
    stack.endpoints.wait_single(Some(&active), UP).await?;
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&standby)
    );
    let completed = stack
        .cluster()
        .await?
        .status
        .and_then(|s| s.last_switchover)
        .and_then(|s| s.completed)
        .expect("the outcome is recorded");
    let lag = returned.duration_since(completed.0);
    println!(
        "kubectl joc switchover --wait returned {:.3} s after the recorded completion",
        lag.as_secs_f64()
    );
    assert!(
        lag.as_secs_f64() < 10.0,
        "returned {lag:?} after the outcome"
    );
    stack
        .wait_event(reason::SWITCHOVER_COMPLETED, &standby, UP)
        .await?;

    // A rejected request (to the member already active): exit code 2 and the reason.
    let out = kubectl_joc(&stack, &["switchover", &name, "--to", &standby, "--wait"]).await?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("already the active member"),
        "{}",
        text(&out.stderr)
    );

    // Not a member: refused before anything is written (exit 1), nothing changes.
    let out = kubectl_joc(&stack, &["switchover", &name, "--to", "nobody-7", "--wait"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a member"),
        "{}",
        text(&out.stderr)
    );
    let annotations = stack
        .cluster()
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(joc_ha_crds::names::ANNOTATION_SWITCHOVER_TO),
        "{annotations:?}"
    );

    // A cluster that does not exist: exit 1 with the fix.
    let out = kubectl_joc(&stack, &["status", "no-such-cluster"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("kubectl get joc -A"),
        "{}",
        text(&out.stderr)
    );

    stack.endpoints.assert_never_two();
    Ok(())
}

/// `restart --wait`: every member pod is replaced (new uid), the Service
/// never routes to two pods, and it returns once one member is active on
/// the new revision.
#[tokio::test]
async fn a_restart_through_the_plugin_replaces_every_pod_and_keeps_one_active() -> anyhow::Result<()>
{
    let (stack, _) = two_members().await?;
    let name = stack.options.name.clone();
    let mut before = std::collections::BTreeMap::new();
    for member in stack.member_names() {
        before.insert(
            member.clone(),
            stack.pods().get(&member).await?.metadata.uid,
        );
    }
    let out = kubectl_joc(&stack, &["restart", &name, "--wait", "--timeout", "5m"]).await?;
    assert!(
        out.status.success(),
        "exit {:?}: {} {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    println!("{}", text(&out.stdout).trim_end());
    assert!(
        text(&out.stdout).contains("one member active"),
        "{}",
        text(&out.stdout)
    );
    for (member, uid) in &before {
        let now = stack.pods().get(member).await?.metadata.uid;
        assert_ne!(&now, uid, "{member} was not replaced");
    }
    assert_eq!(
        stack.endpoints.current().len(),
        1,
        "one active endpoint after the restart"
    );
    stack.endpoints.assert_never_two();

    // A cluster that does not exist: exit 1 with a hint.
    let out = kubectl_joc(&stack, &["restart", "nope"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("kubectl get joc -A"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

/// Waits until `kubectl joc status -o json` shows every member's JOC view
/// naming `pod` as JOC's active member; returns the members' rows.
async fn status_names_joc_active(stack: &Stack, pod: &str) -> anyhow::Result<Vec<Value>> {
    wait_for(
        &format!("every member's JOC view in kubectl joc status to name {pod}"),
        UP,
        Duration::from_millis(300),
        || async {
            let json = status_json(stack).await?;
            let members = json["members"].as_array()?.clone();
            (members.len() == stack.options.members as usize
                && members.iter().all(|m| m["joc"]["member"] == pod))
            .then_some(members)
        },
    )
    .await
}

/// js7 with the JOC stand-ins: each sidecar publishes JOC's view on its
/// pod (`joc-ha.dev/joc-view`), naming JOC's active member; after a
/// switch-over it names the new one, and `kubectl joc status` shows it.
#[tokio::test]
async fn status_shows_jocs_own_active_member_and_it_moves_with_a_switchover() -> anyhow::Result<()>
{
    let stack = Stack::start(StackOptions {
        members: 2,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(UP).await?;
    let first = wait_agreement(&stack, None, UP).await?;
    let name = stack.options.name.clone();

    let members = status_names_joc_active(&stack, &first.pod).await?;
    for member in &members {
        let pod = member["name"].as_str().expect("a name");
        // The annotation itself, as the sidecar wrote it on its own pod.
        let annotations = stack.pods().get(pod).await?.metadata.annotations;
        let note = annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_JOC_VIEW))
            .and_then(|text| JocViewNote::from_annotation(text))
            .expect("the JOC view annotation");
        assert_eq!(note.member.as_deref(), Some(first.pod.as_str()), "{pod}");
        assert!(
            note.member_id
                .as_deref()
                .is_some_and(|id| id.starts_with(&format!("{}:", first.pod))),
            "JOC's MEMBER_ID is <host>:<hash>: {note:?}"
        );
        assert!(
            member["joc"]["instanceHeartBeatAgeSeconds"]
                .as_i64()
                .is_some_and(|age| age >= 0),
            "a Ready member's JOC has its own heartbeat row: {member}"
        );
        assert!(
            member["joc"]["lookedSecondsAgo"].as_i64().is_some(),
            "{member}"
        );
    }
    let table = text(&kubectl_joc(&stack, &["status", &name]).await?.stdout);
    assert!(table.contains("JOC ACTIVE"), "{table}");

    // A switch-over: JOC's own active member moves, and so does every
    // member's view, at once (a change of MEMBER_ID is published at the
    // next look, not after the 30 s refresh).
    let target = stack
        .member_names()
        .into_iter()
        .find(|m| *m != first.pod)
        .expect("a standby");
    let out = kubectl_joc(
        &stack,
        &[
            "switchover",
            &name,
            "--to",
            &target,
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    assert!(
        out.status.success(),
        "switchover failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let second = wait_agreement(&stack, Some(first.term), UP).await?;
    assert_eq!(second.pod, target);
    let agreed = std::time::Instant::now();
    status_names_joc_active(&stack, &target).await?;
    let took = agreed.elapsed();
    println!(
        "every member's JOC view named {target} {:.1} s after the agreement",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(10),
        "a move of JOC's active member is published at the next look, not at the 30 s refresh: {took:?}"
    );
    Ok(())
}

/// `fence` / `unfence`: a fenced standby is never a switch-over target;
/// fencing the active member is refused while no other member could take
/// the lease, and otherwise moves the lease first; a fenced member never
/// takes the lease back, even when the holder's pod goes; a malformed list
/// is refused with the fix and changes nothing.
#[tokio::test]
async fn fencing_moves_the_lease_away_and_keeps_it_away_until_unfenced() -> anyhow::Result<()> {
    use joc_ha_crds::names::ANNOTATION_FENCED_MEMBERS;
    let (stack, active) = two_members().await?;
    let standby = stack.member_other_than(&active).expect("two members");
    let name = stack.options.name.clone();
    let ok = |out: &Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: exit {:?}: {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    let fenced_annotation = |cluster: &joc_ha_crds::JocCluster| {
        cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_FENCED_MEMBERS).cloned())
    };

    // A standby: fenced at once; never a switch-over target.
    let out = kubectl_joc(&stack, &["fence", &standby, "--wait"]).await?;
    ok(&out, "fence the standby");
    stack
        .wait_event(reason::MEMBER_FENCED, &standby, UP)
        .await?;
    let json = wait_for(
        "status to show the standby fenced",
        UP,
        Duration::from_millis(300),
        || async {
            let json = status_json(&stack).await?;
            json["members"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == standby.as_str() && m["fenced"] == true)
                .then_some(json)
        },
    )
    .await?;
    assert!(
        json["members"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["name"] == active.as_str() && m["fenced"] == false)),
        "{json}"
    );
    wait_for(
        "the operator's status.fenced, for kubectl get joc",
        UP,
        Duration::from_millis(300),
        || async {
            let status = stack.cluster().await.ok()?.status?;
            (status.fenced.as_deref() == Some(standby.as_str())).then_some(())
        },
    )
    .await?;
    let out = kubectl_joc(&stack, &["switchover", &name, "--to", &standby, "--wait"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is fenced"),
        "{}",
        text(&out.stderr)
    );

    // The active member, while the only other one is fenced: refused,
    // nothing written.
    let out = kubectl_joc(&stack, &["fence", &active]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no other member is Ready"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fenced_annotation(&stack.cluster().await?),
        Some(format!("[\"{standby}\"]"))
    );
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&active)
    );

    // Unfenced, then the active member fenced: the lease moves first.
    ok(
        &kubectl_joc(&stack, &["unfence", &standby, "--wait"]).await?,
        "unfence",
    );
    let fenced_at = std::time::Instant::now();
    let out = kubectl_joc(&stack, &["fence", &active, "--wait", "--timeout", "90s"]).await?;
    ok(&out, "fence the active member");
    println!("{}", text(&out.stdout).trim_end());
    assert!(
        text(&out.stdout).contains("the lease moved"),
        "{}",
        text(&out.stdout)
    );
    stack.endpoints.wait_single(Some(&active), UP).await?;
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&standby)
    );

    // The holder's pod goes: the fenced member does not take the lease;
    // the holder's new pod does.
    // (The Service may never be seen empty: the old pod's terminating
    // endpoint can stay until the new pod of the same name replaces it.)
    let old_uid = stack.pods().get(&standby).await?.metadata.uid;
    stack.delete_pod(&standby).await?;
    wait_for(
        "the holder's pod to be replaced and routed to",
        UP,
        Duration::from_millis(50),
        || async {
            let uid = stack.pods().get(&standby).await.ok()?.metadata.uid;
            (uid != old_uid && stack.endpoints.current().iter().eq([&standby])).then_some(())
        },
    )
    .await?;
    let back = stack.endpoints.wait_single(None, UP).await?;
    assert_eq!(back, standby, "the new pod of the holder takes the lease");
    // From the moment the lease moved away on, never the fenced member.
    let timeline = stack.endpoints.timeline();
    let moved_at = timeline
        .iter()
        .find(|(at, pods)| *at >= fenced_at && pods.contains(&standby))
        .map(|(at, _)| *at)
        .expect("the Service routed to the standby after the fence");
    let fenced_active: Vec<_> = timeline
        .into_iter()
        .filter(|(at, pods)| *at >= moved_at && pods.contains(&active))
        .collect();
    assert!(
        fenced_active.is_empty(),
        "the fenced member was routed to: {fenced_active:?}"
    );

    // Unfenced: a switch-over to it works again.
    ok(
        &kubectl_joc(&stack, &["unfence", &active, "--wait"]).await?,
        "unfence the old active",
    );
    ok(
        &kubectl_joc(
            &stack,
            &[
                "switchover",
                &name,
                "--to",
                &active,
                "--wait",
                "--timeout",
                "60s",
            ],
        )
        .await?,
        "switch back",
    );

    // A malformed list (written by hand): the operator warns, the plugin
    // refuses with the fix, nothing moves.
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_FENCED_MEMBERS: active.clone()}}});
    stack
        .clusters()
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    stack
        .wait_event(reason::INVALID_FENCING, "JSON array", UP)
        .await?;
    let out = kubectl_joc(&stack, &["fence", &standby]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("joc-ha.dev/fenced-members-"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        stack.endpoints.current().into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&active)
    );
    stack.endpoints.assert_never_two();
    Ok(())
}
