//! `make demo`: a 3-member JOC cluster on a local control plane, run by the
//! real operator and sidecars (JOC stand-ins play JOC Cockpit), on SQLite by
//! default or on the database in `DATABASE_URL`. It shows a switch-over by
//! annotation and a fail-over by killing the active member, with their
//! measured times, then stays up for you to try until Ctrl-C.
//!
//!   demo            the scripted part, then a live view until Ctrl-C
//!   demo --once     the scripted part and a summary; exit 0 on success

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use joc_ha_crds::names::{LABEL_ROLE, pod as pod_names};
use joc_ha_tests::agreement::wait_agreement;
use joc_ha_tests::db::Backend;
use joc_ha_tests::stack::{Stack, StackOptions, is_ready};
use kube::ResourceExt;
use kube::api::ListParams;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let once = std::env::args().any(|a| a == "--once");
    match run(once).await {
        Ok(()) => {}
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            std::process::exit(1);
        }
    }
}

fn say(text: impl AsRef<str>) {
    println!("{}", text.as_ref());
    let _ = std::io::stdout().flush();
}

async fn run(once: bool) -> Result<()> {
    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let backend = match database_url.as_deref() {
        None => Backend::Sqlite,
        Some(url) if url.starts_with("postgres") => Backend::Postgres,
        Some(url) if url.starts_with("mysql") || url.starts_with("mariadb") => Backend::MariaDb,
        Some(url) if url.starts_with("sqlite") => Backend::Sqlite,
        Some(_) => {
            bail!("DATABASE_URL must start with postgres://, mysql://, mariadb:// or sqlite://")
        }
    };
    say(format!(
        "joc-ha demo: starting a control plane, the operator and a 3-member JocCluster on {}",
        match &database_url {
            None => "an embedded SQLite file".to_owned(),
            Some(_) => format!("{} (DATABASE_URL)", backend.name()),
        }
    ));
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        backend,
        members: 3,
        database_url,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_members_ready(Duration::from_secs(120)).await?;
    let first = stack
        .endpoints
        .wait_single(None, Duration::from_secs(120))
        .await?;
    say(format!(
        "cluster up in {:.1} s: {first} is active\n",
        started.elapsed().as_secs_f64()
    ));
    print_view(&stack).await?;

    // Switch-over, the way a user asks for it.
    let target = stack.member_other_than(&first).context("no standby")?;
    say(format!(
        "\n1) switch-over: kubectl annotate joccluster joc -n js7 joc-ha.dev/switchover-to={target}"
    ));
    let asked = Instant::now();
    let output = stack
        .plane
        .kubectl([
            "annotate",
            "joccluster",
            "joc",
            "-n",
            "js7",
            &format!("joc-ha.dev/switchover-to={target}"),
        ])
        .await?;
    if !output.status.success() {
        bail!(
            "kubectl annotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let now = stack
        .endpoints
        .wait_single(Some(&first), STEP_TIMEOUT)
        .await?;
    let switchover = asked.elapsed();
    say(format!(
        "   the Service routes to {now} after {} ms (annotation → endpoint moved; the label waited for JOC to confirm {now})",
        switchover.as_millis()
    ));
    let agreed = wait_agreement(&stack, None, STEP_TIMEOUT).await?.pod;
    say(format!(
        "   lease holder, label, Service and JOC's own active member (JOC_CLUSTER) agree on {agreed}"
    ));
    print_view(&stack).await?;

    // Fail-over: the active member's containers die at once.
    say(format!(
        "\n2) fail-over: SIGKILL of {now}'s sidecar and cockpit (kept down for a moment)"
    ));
    let namespace = stack.options.namespace.clone();
    for container in [pod_names::SIDECAR_CONTAINER, pod_names::COCKPIT_CONTAINER] {
        stack.kubelet.block_starts(&namespace, &now, container);
    }
    let killed = Instant::now();
    for process in [stack.sidecar(&now), stack.cockpit(&now)]
        .into_iter()
        .flatten()
    {
        process.kill().await?;
    }
    let next = stack
        .endpoints
        .wait_single(Some(&now), STEP_TIMEOUT)
        .await?;
    let failover = killed.elapsed();
    say(format!(
        "   the Service routes to {next} after {} ms (kill → endpoint moved: the lease TTL, then JOC's own take-over once the dead instance's heartbeat is exceeded)",
        failover.as_millis()
    ));
    let agreed = wait_agreement(&stack, None, STEP_TIMEOUT).await?.pod;
    say(format!(
        "   lease holder, label, Service and JOC's own active member agree on {agreed}"
    ));
    for container in [pod_names::SIDECAR_CONTAINER, pod_names::COCKPIT_CONTAINER] {
        stack.kubelet.allow_starts(&namespace, &now, container);
    }
    print_view(&stack).await?;

    let never_two = stack.endpoints.violations().is_empty();
    say(format!(
        "\nsummary: switch-over {} ms, fail-over {} ms, two pods behind the Service at once: {}",
        switchover.as_millis(),
        failover.as_millis(),
        if never_two { "never" } else { "YES (bug)" }
    ));
    if !never_two {
        bail!("the active Service routed to two pods at once");
    }
    if once {
        return Ok(());
    }

    let kubectl = stack.plane.bin_dir().join("kubectl");
    let kubeconfig = stack.plane.kubeconfig_path();
    say(format!(
        "\nThe cluster stays up until Ctrl-C. In another terminal:\n\
         \n  export KUBECONFIG={kc}\n  alias kubectl={k}\n\
         \n  kubectl get joc -n js7\
         \n  kubectl describe joc joc -n js7\
         \n  kubectl annotate joccluster joc -n js7 joc-ha.dev/switchover-to=any\
         \n  kubectl delete pod -n js7 <the active pod>      # graceful: hand-over first\
         \n  kill -KILL <pid of a sidecar>                   # crash: pids below\n",
        kc = kubeconfig.display(),
        k = kubectl.display()
    ));
    let interactive = std::io::stdout().is_terminal();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if interactive {
                    print!("\x1b[2J\x1b[H");
                    say(format!("joc-ha demo — KUBECONFIG={} — Ctrl-C stops and cleans up\n", kubeconfig.display()));
                }
                print_view(&stack).await?;
            }
        }
    }
    say("\nstopping: everything is cleaned up");
    Ok(())
}

/// Members, role, term, readiness, where the Service routes, last events.
async fn print_view(stack: &Stack) -> Result<()> {
    let pods = stack
        .pods()
        .list(&ListParams::default().labels("joc-ha.dev/component=member"))
        .await?;
    let routed: BTreeSet<String> = stack.endpoints.current();
    // JOC's own view: its active member's host name is the pod name.
    let joc_active = joc_ha_tests::joc::joc_active_member(&stack.database_url)
        .await
        .ok()
        .flatten()
        .map(|id| joc_ha_tests::agreement::host_of(&id).to_owned());
    say(format!(
        "   {:<8} {:<8} {:<5} {:<6} {:<8} {:<10} {}",
        "MEMBER", "ROLE", "TERM", "READY", "SERVICE", "JOC", "SIDECAR PID"
    ));
    let mut pods = pods.items;
    pods.sort_by_key(|p| p.name_any());
    for pod in &pods {
        let name = pod.name_any();
        let role = pod
            .labels()
            .get(LABEL_ROLE)
            .cloned()
            .unwrap_or_else(|| "-".into());
        let term = pod
            .annotations()
            .get("joc-ha.dev/lease-term")
            .cloned()
            .unwrap_or_else(|| "-".into());
        let pid = stack
            .sidecar(&name)
            .map(|p| p.pid().to_string())
            .unwrap_or_else(|| "-".into());
        say(format!(
            "   {:<8} {:<8} {:<5} {:<6} {:<8} {:<10} {}",
            name,
            role,
            term,
            if is_ready(pod) { "yes" } else { "no" },
            if routed.contains(&name) {
                "<- here"
            } else {
                ""
            },
            if joc_active.as_deref() == Some(name.as_str()) {
                "active"
            } else {
                "standby"
            },
            pid
        ));
    }
    for (reason, note) in stack.recent_cluster_events(4).await? {
        say(format!("   event {reason}: {note}"));
    }
    Ok(())
}
