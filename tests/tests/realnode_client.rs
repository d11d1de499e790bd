//! Issue #15, clients: a client inside a real node sends 50 requests/s to
//! the JocCluster's Service `<name>` by its ClusterIP while the operator's
//! generic pods (the shipped sidecar image, the `standin-cockpit` image)
//! switch over by annotation and fail over after a crash of the active
//! pod's processes (SIGKILL of its sidecar and cockpit; the kubelet restarts
//! them). Checked: no answer served by a member that did not hold the lease
//! term it answered under (judged against a poll of the lease row), and
//! answers again after each fault. Printed: the client-visible gaps (JSON
//! and a readable line). `JOC_HA_CLIENT_TRIALS=N` repeats both faults N
//! times and prints p50/p99 per kind. Needs root, `make realnode images`:
//! see README "Real nodes".

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use joc_ha_crds::names;
use joc_ha_crds::v1alpha1::JocCluster;
use joc_ha_tests::db::{Backend, TestDb};
use joc_ha_tests::proxy::TcpProxy;
use joc_ha_tests::realnode::{RealCluster, image_ref};
use joc_ha_tests::service_client::check::{self, Handover, Request};
use joc_ha_tests::service_client::{LeaseObserver, ServiceClient};
use joc_ha_tests::wait::{wait_for, wait_for_ok};

const COCKPIT: &str = "standin-cockpit";
const REQUESTS_PER_SECOND: u32 = 50;
/// Generous: answers again after a fault (measured well below a second).
const ANSWERS_AGAIN: Duration = Duration::from_secs(60);

/// The newest term the client's answers came under, and who served it.
fn newest_served(requests: &[Request]) -> Option<(String, i64)> {
    requests
        .iter()
        .filter_map(|r| r.served())
        .max_by_key(|(_, term)| *term)
        .map(|(member, term)| (member.to_owned(), term))
}

/// Waits until the client has an answer served under a term above `after`.
async fn served_after(
    client: &ServiceClient,
    after: i64,
    what: &str,
) -> anyhow::Result<(String, i64)> {
    wait_for_ok(what, ANSWERS_AGAIN, Duration::from_millis(20), || async {
        let requests = client.requests();
        match newest_served(&requests) {
            Some((member, term)) if term > after => Ok((member, term)),
            newest => Err(format!(
                "newest served {newest:?} of {} requests, last {:?}",
                requests.len(),
                requests.last().map(|r| &r.outcome)
            )),
        }
    })
    .await
}

/// Waits until the client's last `STEADY` answers all came under `term`
/// (kube-proxy routes only to the active pod again), so that the next
/// fault starts from a steady state.
async fn steady(client: &ServiceClient, term: i64) -> anyhow::Result<()> {
    const STEADY: usize = 10;
    wait_for_ok(
        &format!("{STEADY} answers in a row under term {term}"),
        ANSWERS_AGAIN,
        Duration::from_millis(20),
        || async {
            let requests = client.requests();
            let last: Vec<Option<i64>> = requests
                .iter()
                .rev()
                .take(STEADY)
                .map(|r| r.served().map(|(_, t)| t))
                .collect();
            if last.len() == STEADY && last.iter().all(|t| *t == Some(term)) {
                Ok(())
            } else {
                Err(format!("last terms {last:?}"))
            }
        },
    )
    .await
}

/// Both members Ready, one labelled active and one standby, and no
/// switch-over request left on the cluster (the next one must be new).
async fn settled(pods: &Api<Pod>, clusters: &Api<JocCluster>) -> anyhow::Result<()> {
    let members = ListParams::default().labels(&format!("{}=joc", names::LABEL_CLUSTER));
    wait_for_ok(
        "both members Ready, one active and one standby, no switch-over pending",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let list = pods.list(&members).await.map_err(|e| e.to_string())?;
            let mut roles: Vec<(String, String, bool)> = list
                .items
                .iter()
                .map(|p| {
                    let role = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(names::LABEL_ROLE).cloned())
                        .unwrap_or_default();
                    (
                        role,
                        p.metadata.name.clone().unwrap_or_default(),
                        joc_ha_crds::pods::is_ready(p),
                    )
                })
                .collect();
            roles.sort();
            let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
            if cluster
                .metadata
                .annotations
                .is_some_and(|a| a.contains_key(names::ANNOTATION_SWITCHOVER_TO))
            {
                return Err("the switch-over annotation is still there".into());
            }
            let labels: Vec<&str> = roles.iter().map(|(r, _, _)| r.as_str()).collect();
            if labels == [names::ROLE_ACTIVE, names::ROLE_STANDBY] && roles.iter().all(|r| r.2) {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            }
        },
    )
    .await
}

/// SIGKILLs every process of pod `uid` but its sandbox (the sidecar and the
/// cockpit): a crash; the kubelet restarts the containers. Returns how many.
fn crash_pod_processes(uid: &str) -> anyhow::Result<usize> {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let (Ok(cgroups), Ok(cmdline)) = (
            std::fs::read_to_string(entry.path().join("cgroup")),
            std::fs::read(entry.path().join("cmdline")),
        ) else {
            continue;
        };
        let in_pod = cgroups
            .lines()
            .any(|l| l.contains("/kubepods") && l.contains(&format!("/pod{uid}/")));
        if in_pod && !cmdline.starts_with(b"/pause") {
            match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                Ok(()) => killed += 1,
                // It ended between the scan and the signal.
                Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(killed)
}

/// The handover to the first term above `after`.
fn handover_after(moves: &[Handover], after: i64) -> Option<&Handover> {
    moves
        .iter()
        .find(|h| h.from_term <= after && h.to_term > after)
}

#[tokio::test]
async fn a_client_behind_the_service_is_served_only_by_the_lease_holder_through_switchover_and_crash()
-> anyhow::Result<()> {
    let trials: usize = std::env::var("JOC_HA_CLIENT_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let db = TestDb::start_private(Backend::Postgres).await?;
    let cluster = RealCluster::start(2, &["joc-ha-sidecar", COCKPIT]).await?;
    let plane = &cluster.plane;
    let proxy = TcpProxy::start_on(
        cluster.network.root_address(),
        joc_ha_tests::proxy::upstream_of(&db.url())?,
    )
    .await?;
    let url = proxy.url_for(&db.url())?;
    joc_ha_tests::operator::install_crd(plane).await?;
    plane.create_namespace("ha").await?;
    let _operator = joc_ha_tests::operator::start_with_chart_account(plane).await?;
    let secrets: Api<Secret> = Api::namespaced(plane.client(), "ha");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "joc-db"}, "stringData": {"url": url}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let spec: JocCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster",
        "metadata": {"name": "joc", "namespace": "ha"},
        "spec": {
            "members": 2,
            "image": image_ref(COCKPIT)?,
            "sidecar": {"image": image_ref("joc-ha-sidecar")?},
            "database": {"type": "postgresql", "secretRef": {"name": "joc-db"}},
            "workload": {"mode": "generic"},
        },
    }))?;
    let clusters: Api<JocCluster> = Api::namespaced(plane.client(), "ha");
    clusters.create(&PostParams::default(), &spec).await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "ha");
    let services: Api<Service> = Api::namespaced(plane.client(), "ha");
    let service_name = names::active_service_name("joc");
    let (cluster_ip, port) = wait_for(
        "the Service joc with a ClusterIP",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let spec = services.get(&service_name).await.ok()?.spec?;
            let ip: std::net::IpAddr = spec.cluster_ip?.parse().ok()?;
            let port = spec.ports?.first()?.port;
            Some((ip, u16::try_from(port).ok()?))
        },
    )
    .await?;
    settled(&pods, &clusters).await?;

    // The lease as the database shows it, every 10 ms, beside the client on node 1.
    let observer = LeaseObserver::start(&db.url(), "ha/joc", Duration::from_millis(10)).await?;
    let client = ServiceClient::start(
        &cluster.nodes[0].netns(),
        SocketAddr::new(cluster_ip, port),
        REQUESTS_PER_SECOND,
    )?;
    let (mut serving, mut term) =
        served_after(&client, 0, "a first answer through the Service").await?;
    let mut faults: Vec<(&str, i64)> = Vec::new();
    for trial in 0..trials {
        if trial > 0 {
            settled(&pods, &clusters).await?;
        }
        steady(&client, term).await?;
        // Switch-over by annotation: any standby.
        faults.push(("switchover", term));
        clusters
            .patch(
                "joc",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    names::ANNOTATION_SWITCHOVER_TO: names::SWITCHOVER_TO_ANY}}})),
            )
            .await?;
        let (next, next_term) =
            served_after(&client, term, "answers after the switch-over").await?;
        assert_ne!(next, serving, "the switch-over kept {serving} serving");
        (serving, term) = (next, next_term);
        settled(&pods, &clusters).await?;
        steady(&client, term).await?;

        // A crash of the active pod's processes.
        let uid = pods
            .get(&serving)
            .await?
            .metadata
            .uid
            .context("active pod without uid")?;
        faults.push(("crash", term));
        let killed = crash_pod_processes(&uid)?;
        assert!(
            killed >= 2,
            "killed {killed} processes of {serving}, expected sidecar and cockpit"
        );
        (serving, term) = served_after(&client, term, "answers after the crash").await?;
    }
    // One more second of answers after the last fault.
    let count = client.requests().len();
    wait_for(
        "another second of requests",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            (client.requests().len() >= count + REQUESTS_PER_SECOND as usize).then_some(())
        },
    )
    .await?;
    let requests = client.stop()?;
    let samples = observer.stop().await;

    let holdings = check::holdings(&samples);
    let judgement = check::judge(&requests, &holdings);
    assert!(
        judgement.by_non_holder.is_empty(),
        "answers served by a member that did not hold their term: {:?}\nholdings {holdings:?}",
        judgement.by_non_holder
    );
    assert_eq!(
        judgement.unjudged, 0,
        "answers under a term the lease observer never saw (holdings {holdings:?})"
    );
    let moves = check::handovers(&requests);
    let gaps = |kind: &str| -> anyhow::Result<Vec<f64>> {
        faults
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, before)| {
                handover_after(&moves, *before)
                    .map(|h| h.gap_ms)
                    .with_context(|| format!("no handover after term {before} ({kind}): {moves:?}"))
            })
            .collect()
    };
    let (switchover, crash) = (gaps("switchover")?, gaps("crash")?);
    let line = serde_json::json!({
        "measure": "client_gap_ms",
        "requests_per_second": REQUESTS_PER_SECOND,
        "trials": trials,
        "switchover_gap_ms": switchover,
        "crash_gap_ms": crash,
        "switchover_p50_ms": check::percentile(&switchover, 50.0),
        "switchover_p99_ms": check::percentile(&switchover, 99.0),
        "crash_p50_ms": check::percentile(&crash, 50.0),
        "crash_p99_ms": check::percentile(&crash, 99.0),
        "judgement": {
            "requests": judgement.requests, "served": judgement.served,
            "standby": judgement.standby, "errors": judgement.errors,
            "by_non_holder": judgement.by_non_holder.len(),
        },
        "lease_looks": samples.len(),
        "handovers": moves,
    });
    println!("{line}");
    let pct = |v: &[f64], p: f64| {
        check::percentile(v, p).map_or_else(|| "-".to_owned(), |g| format!("{g:.0}"))
    };
    let ms = |v: &[f64]| {
        v.iter()
            .map(|g| format!("{g:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "measured: client behind the Service ({} requests, {} served, {} standby answers, {} errors, 0 by a non-holder): switch-over gap [{}] ms, crash gap [{}] ms (p50/p99: switch-over {}/{} ms, crash {}/{} ms)",
        judgement.requests,
        judgement.served,
        judgement.standby,
        judgement.errors,
        ms(&switchover),
        ms(&crash),
        pct(&switchover, 50.0),
        pct(&switchover, 99.0),
        pct(&crash, 50.0),
        pct(&crash, 99.0),
    );
    Ok(())
}
