//! The harness against real control-plane processes: controllers (StatefulSet,
//! EndpointSlice, garbage collector), RBAC with minted tokens, the CRD, and the
//! fake kubelet with real processes. Each test starts its own control plane.

use joc_ha_crds::pods::is_ready;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use joc_ha_tests::controlplane::ControlPlane;
use joc_ha_tests::kubelet::{FakeKubelet, FakeKubeletConfig, ProcessSpec};
use joc_ha_tests::wait::{wait_for, wait_for_ok};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt as _};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("building object from JSON")
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

async fn start() -> anyhow::Result<(ControlPlane, FakeKubelet)> {
    let started = Instant::now();
    let plane = ControlPlane::start().await?;
    let kubelet = FakeKubelet::start(plane.client(), FakeKubeletConfig::new(&plane)).await?;
    eprintln!(
        "control plane + fake kubelet ready in {:.1?}",
        started.elapsed()
    );
    Ok((plane, kubelet))
}

fn web_pod(name: &str, app: &str) -> anyhow::Result<Pod> {
    from_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": app } },
        "spec": { "containers": [{ "name": "main", "image": "example.invalid/web:1", "ports": [{ "containerPort": 8080 }] }] }
    }))
}

#[tokio::test]
async fn statefulset_gets_three_ready_pods_with_distinct_ips() -> anyhow::Result<()> {
    let (plane, _kubelet) = start().await?;
    plane.create_namespace("sts").await?;
    let client = plane.client();
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "sts");
    let statefulset: StatefulSet = from_json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "main", "image": "example.invalid/web:1" }] }
            }
        }
    }))?;
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "sts");
    let ips = wait_for_ok("3 Ready pods of StatefulSet web", TIMEOUT, POLL, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let ready: BTreeMap<String, String> = list
            .items
            .iter()
            .filter(|pod| is_ready(pod))
            .filter_map(|pod| Some((pod.metadata.name.clone()?, pod_ip(pod)?)))
            .collect();
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!(
                "{} pods, ready with IP: {ready:?}",
                list.items.len()
            ))
        }
    })
    .await?;
    let distinct: BTreeSet<&String> = ips.values().collect();
    assert_eq!(distinct.len(), 3, "pod IPs must be distinct: {ips:?}");
    assert!(ips.values().all(|ip| ip.starts_with("192.0.2.")), "{ips:?}");
    assert_eq!(
        ips.keys().cloned().collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"]
    );

    wait_for(
        "StatefulSet status readyReplicas=3",
        TIMEOUT,
        POLL,
        || async {
            let sts = statefulsets.get("web").await.ok()?;
            (sts.status?.ready_replicas == Some(3)).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn endpoint_slices_follow_ready_pods_and_labels() -> anyhow::Result<()> {
    let (plane, _kubelet) = start().await?;
    plane.create_namespace("eps").await?;
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "eps");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "other")] {
        pods.create(&PostParams::default(), &web_pod(name, app)?)
            .await?;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "eps");
    let service: Service = from_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))?;
    services.create(&PostParams::default(), &service).await?;

    let ip_of = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait_for(
                &format!("pod {name} Ready with an IP"),
                TIMEOUT,
                POLL,
                || async {
                    let pod = pods.get(name).await.ok()?;
                    if is_ready(&pod) { pod_ip(&pod) } else { None }
                },
            )
            .await
        }
    };
    let (a, b, c) = (ip_of("a").await?, ip_of("b").await?, ip_of("c").await?);

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "eps");
    let wait_endpoints = |expected: BTreeSet<String>, what: &'static str| {
        let slices = slices.clone();
        async move {
            wait_for_ok(what, TIMEOUT, POLL, || async {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await
                    .map_err(|e| e.to_string())?;
                let ready: BTreeSet<String> = list
                    .items
                    .iter()
                    .flat_map(|slice| slice.endpoints.iter().flatten())
                    .filter(|endpoint| {
                        endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                    })
                    .flat_map(|endpoint| endpoint.addresses.iter().cloned())
                    .collect();
                if ready == expected {
                    Ok(())
                } else {
                    Err(format!("ready endpoints {ready:?}, want {expected:?}"))
                }
            })
            .await
        }
    };
    wait_endpoints([a.clone(), b.clone()].into(), "endpoints of a and b").await?;

    let relabel = |name: &'static str, app: &'static str| {
        let pods = pods.clone();
        async move {
            pods.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "app": app } } })),
            )
            .await
            .with_context(|| format!("relabelling {name}"))
        }
    };
    relabel("a", "other").await?;
    wait_endpoints([b.clone()].into(), "a to leave the endpoints").await?;
    relabel("c", "web").await?;
    wait_endpoints([b, c].into(), "c to join the endpoints").await?;
    Ok(())
}

#[tokio::test]
async fn garbage_collector_removes_dependents() -> anyhow::Result<()> {
    let (plane, _kubelet) = start().await?;
    plane.create_namespace("gc").await?;
    let client = plane.client();

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "gc");
    let statefulset: StatefulSet = from_json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "db" },
        "spec": {
            "replicas": 2, "serviceName": "db", "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": { "terminationGracePeriodSeconds": 5, "containers": [{ "name": "main", "image": "example.invalid/db:1" }] }
            }
        }
    }))?;
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gc");
    let count_pods = || async {
        pods.list(&ListParams::default().labels("app=db"))
            .await
            .map(|list| list.items.len())
            .map_err(|e| e.to_string())
    };
    wait_for_ok("2 pods of StatefulSet db", TIMEOUT, POLL, || async {
        match count_pods().await? {
            2 => Ok(()),
            n => Err(format!("{n} pods")),
        }
    })
    .await?;
    statefulsets
        .delete("db", &DeleteParams::background())
        .await?;
    wait_for_ok(
        "the pods of the deleted StatefulSet to be gone",
        TIMEOUT,
        POLL,
        || async {
            match count_pods().await? {
                0 => Ok(()),
                n => Err(format!("{n} pods left")),
            }
        },
    )
    .await?;

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let owner = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().context("owner has no uid")?,
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    maps.create(&PostParams::default(), &dependent).await?;
    maps.delete("owner", &DeleteParams::background()).await?;
    wait_for(
        "ConfigMap dependent to be collected",
        TIMEOUT,
        POLL,
        || async { matches!(maps.get_opt("dependent").await, Ok(None)).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn process_per_container_restarts_and_stops_on_delete() -> anyhow::Result<()> {
    let started = Instant::now();
    let plane = ControlPlane::start().await?;
    let config = FakeKubeletConfig::new(&plane).with_restart_backoff(Duration::from_millis(500)).with_runner(
        |_pod: &Pod, container: &k8s_openapi::api::core::v1::Container, ctx: &joc_ha_tests::kubelet::PodContext| {
            if container.name != "main" {
                return None;
            }
            let dir = ctx.mount("/data")?.to_string_lossy().into_owned();
            Some(
                ProcessSpec::shell(
                    "trap 'echo stopping > \"$DIR/terminated\"; exit 0' TERM; echo \"$POD_NAME\" > \"$DIR/x\"; \
                     while :; do sleep 0.1; done",
                )
                .env("DIR", dir),
            )
        },
    );
    let kubelet = FakeKubelet::start(plane.client(), config).await?;
    eprintln!(
        "control plane + fake kubelet ready in {:.1?}",
        started.elapsed()
    );
    plane.create_namespace("proc").await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "proc");
    let pod: Pod = from_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "worker" },
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "volumes": [{ "name": "data", "emptyDir": {} }],
            "containers": [
                {
                    "name": "main", "image": "example.invalid/worker:1",
                    "env": [{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
                    "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                },
                { "name": "idle", "image": "example.invalid/idle:1" }
            ]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;

    let data = wait_for("the pod dir", TIMEOUT, POLL, || async {
        kubelet.pod_dir("proc", "worker")
    })
    .await?
    .join("volumes/data");
    let written = wait_for("the process to write $DIR/x", TIMEOUT, POLL, || async {
        std::fs::read_to_string(data.join("x"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await?;
    assert_eq!(written.trim(), "worker");

    let restart_count = |pod: &Pod| -> Option<i32> {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        Some(statuses.iter().find(|s| s.name == "main")?.restart_count)
    };
    wait_for("pod worker Ready", TIMEOUT, POLL, || async {
        pods.get("worker").await.ok().filter(is_ready)
    })
    .await?;

    let first = kubelet
        .process("proc", "worker", "main")
        .context("no process for container main")?;
    first.kill().await?;
    wait_for_ok("restartCount 1 and Ready again", TIMEOUT, POLL, || async {
        let pod = pods.get("worker").await.map_err(|e| e.to_string())?;
        match (restart_count(&pod), is_ready(&pod)) {
            (Some(1), true) => Ok(()),
            observed => Err(format!("(restartCount, ready) = {observed:?}")),
        }
    })
    .await?;
    let second = kubelet
        .process("proc", "worker", "main")
        .context("no process after the restart")?;
    assert_ne!(first.pid(), second.pid());

    pods.delete("worker", &DeleteParams::default()).await?;
    wait_for("pod worker gone", TIMEOUT, POLL, || async {
        matches!(pods.get_opt("worker").await, Ok(None)).then_some(())
    })
    .await?;
    let exit = second
        .wait_exit(Duration::from_secs(10))
        .await
        .context("process still running after its pod was deleted")?;
    assert_eq!(
        exit.code(),
        Some(0),
        "the process must have stopped through its SIGTERM trap"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("terminated"))?.trim(),
        "stopping"
    );
    Ok(())
}

#[tokio::test]
async fn service_account_tokens_obey_rbac() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    plane.create_namespace("rbac").await?;
    let client = plane.client();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "rbac");
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("reader".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let token = plane.token_for("rbac", "reader").await?;
    let reader = plane.client_for_token(&token).await?;
    let reader_pods: Api<Pod> = Api::namespaced(reader, "rbac");
    match reader_pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing pods without RBAC must be forbidden, got {other:?}"),
    }

    let role: Role = from_json(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["list"] }]
    }))?;
    Api::<Role>::namespaced(client.clone(), "rbac")
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = from_json(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "reader-reads-pods" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": "rbac" }]
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), "rbac")
        .create(&PostParams::default(), &binding)
        .await?;
    wait_for_ok(
        "the RoleBinding to allow listing pods",
        TIMEOUT,
        POLL,
        || async {
            reader_pods
                .list(&ListParams::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await?;

    // The kubeconfig form works for kubectl too, with the same rights.
    let kubeconfig = plane.kubeconfig_for_token(&token)?;
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let allowed = plane
        .kubectl(["--kubeconfig", &kubeconfig, "-n", "rbac", "get", "pods"])
        .await?;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = plane
        .kubectl(["--kubeconfig", &kubeconfig, "-n", "rbac", "get", "secrets"])
        .await?;
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn crd_is_established_and_kubectl_lists_it() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client());
    let crd = joc_ha_crds::JocCluster::crd();
    let name = crd.metadata.name.clone().context("CRD without name")?;
    crds.create(&PostParams::default(), &crd).await?;
    wait_for("CRD Established", TIMEOUT, POLL, || async {
        let crd = crds.get(&name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await?;
    let output = plane.kubectl(["get", "jocclusters", "-A"]).await?;
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let short = plane.kubectl(["get", "joc", "-A"]).await?;
    assert!(
        short.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&short.stderr)
    );
    let helm = plane.helm(["list", "-A"]).await?;
    assert!(
        helm.status.success(),
        "helm failed: {}",
        String::from_utf8_lossy(&helm.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn apiserver_restart_keeps_state_and_kubelet_recovers() -> anyhow::Result<()> {
    let (plane, _kubelet) = start().await?;
    plane.create_namespace("chaos").await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "chaos");
    pods.create(&PostParams::default(), &web_pod("before", "web")?)
        .await?;
    wait_for("pod before Ready", TIMEOUT, POLL, || async {
        pods.get("before").await.ok().filter(is_ready)
    })
    .await?;

    let restarted = Instant::now();
    plane.restart_apiserver().await?;
    eprintln!("apiserver restarted in {:.1?}", restarted.elapsed());

    assert!(
        is_ready(&pods.get("before").await?),
        "state must survive the restart"
    );
    // The kubelet's watch reconnects: a pod created afterwards is bound and readied.
    pods.create(&PostParams::default(), &web_pod("after", "web")?)
        .await?;
    wait_for("pod after Ready", TIMEOUT, POLL, || async {
        pods.get("after").await.ok().filter(is_ready)
    })
    .await?;
    Ok(())
}

/// Serves `GET` with 200 while `healthy` is set, else 503.
async fn serve_health(
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/healthz", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let status = if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    Ok((url, task))
}

#[tokio::test]
async fn kubelet_runs_sidecars_probes_secrets_and_tokens() -> anyhow::Result<()> {
    use joc_ha_tests::kubelet::{PodContext, Readiness};
    use k8s_openapi::api::core::v1::{Container, Secret};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let plane = ControlPlane::start().await?;
    let healthy = Arc::new(AtomicBool::new(false));
    let (health_url, _server) = serve_health(Arc::clone(&healthy)).await?;
    let kubectl = plane
        .bin_dir()
        .join("kubectl")
        .to_string_lossy()
        .into_owned();
    let runner = move |_pod: &Pod,
                       container: &Container,
                       ctx: &PodContext|
          -> Option<ProcessSpec> {
        let dir = ctx.mount("/shared")?.to_string_lossy().into_owned();
        let record_stop = format!(
            "trap 'echo {} >> \"$DIR/stops\"; exit 0' TERM;",
            container.name
        );
        let spec = match container.name.as_str() {
            "sidecar" => ProcessSpec::shell(format!(
                "{record_stop} \"$KUBECTL\" --kubeconfig \"$KCFG\" get pods > \"$DIR/kubectl.out\" 2>&1; \
                 echo done >> \"$DIR/kubectl.out\"; while :; do sleep 0.1; done"
            ))
            .env("KUBECTL", kubectl.clone())
            .env("KCFG", ctx.kubeconfig_path.as_ref()?.to_string_lossy().into_owned()),
            "main" => ProcessSpec::shell(format!(
                "{record_stop} echo \"$PASSWORD\" > \"$DIR/password\"; while :; do sleep 0.1; done"
            ))
            .readiness(Readiness::HttpGet(health_url.clone())),
            _ => return None,
        };
        Some(spec.env("DIR", dir))
    };
    let config = FakeKubeletConfig::new(&plane)
        .with_restart_backoff(Duration::from_millis(300))
        .with_runner(runner);
    let kubelet = FakeKubelet::start(plane.client(), config).await?;
    plane.create_namespace("feat").await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "feat");
    let pod: Pod = from_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "volumes": [{ "name": "shared", "emptyDir": {} }],
            "initContainers": [
                { "name": "setup", "image": "example.invalid/setup:1" },
                { "name": "sidecar", "image": "example.invalid/sidecar:1", "restartPolicy": "Always",
                  "volumeMounts": [{ "name": "shared", "mountPath": "/shared" }] }
            ],
            "containers": [{
                "name": "main", "image": "example.invalid/main:1",
                "env": [{ "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } }],
                "volumeMounts": [{ "name": "shared", "mountPath": "/shared" }]
            }]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let main_status = |pod: &Pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|s| s.name == "main")
            .cloned()
    };

    // A missing Secret keeps main from starting, as kubelet reports it.
    wait_for_ok(
        "main waiting with CreateContainerConfigError",
        TIMEOUT,
        POLL,
        || async {
            let pod = pods.get("p").await.map_err(|e| e.to_string())?;
            let reason = main_status(&pod).and_then(|s| s.state?.waiting?.reason);
            if reason.as_deref() == Some("CreateContainerConfigError") {
                Ok(())
            } else {
                Err(format!("main waiting reason {reason:?}"))
            }
        },
    )
    .await?;
    let init_statuses = pods
        .get("p")
        .await?
        .status
        .and_then(|s| s.init_container_statuses)
        .unwrap_or_default();
    let sidecar = init_statuses
        .iter()
        .find(|s| s.name == "sidecar")
        .context("no sidecar status")?;
    assert_eq!(sidecar.started, Some(true), "{sidecar:?}");
    assert!(
        sidecar
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some(),
        "{sidecar:?}"
    );

    // The sidecar's process talks to the API with the pod's own token: no rights.
    let shared = kubelet
        .pod_dir("feat", "p")
        .context("no pod dir")?
        .join("volumes/shared");
    let kubectl_out = wait_for("the sidecar's kubectl to finish", TIMEOUT, POLL, || async {
        std::fs::read_to_string(shared.join("kubectl.out"))
            .ok()
            .filter(|out| out.contains("done"))
    })
    .await?;
    assert!(
        kubectl_out.contains("forbidden")
            && kubectl_out.contains("system:serviceaccount:feat:default"),
        "{kubectl_out}"
    );

    Api::<Secret>::namespaced(plane.client(), "feat")
        .create(&PostParams::default(), &from_json(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "creds" }, "stringData": { "password": "s3cret" } }))?)
        .await?;
    let password = wait_for("main to write the secret", TIMEOUT, POLL, || async {
        std::fs::read_to_string(shared.join("password"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await?;
    assert_eq!(password.trim(), "s3cret");

    // Readiness follows the probe.
    let ready_is = |want: bool| {
        let pods = pods.clone();
        async move {
            wait_for(&format!("pod Ready={want}"), TIMEOUT, POLL, || async {
                let pod = pods.get("p").await.ok()?;
                (is_ready(&pod) == want && main_status(&pod)?.state?.running.is_some())
                    .then_some(pod)
            })
            .await
        }
    };
    ready_is(false).await?;
    healthy.store(true, Ordering::SeqCst);
    ready_is(true).await?;
    healthy.store(false, Ordering::SeqCst);
    ready_is(false).await?;
    healthy.store(true, Ordering::SeqCst);
    ready_is(true).await?;

    // A blocked container stays down after its process dies, until allowed.
    kubelet.block_starts("feat", "p", "main");
    kubelet
        .process("feat", "p", "main")
        .context("no main process")?
        .kill()
        .await?;
    let down = wait_for("main down while blocked", TIMEOUT, POLL, || async {
        let pod = pods.get("p").await.ok()?;
        let status = main_status(&pod)?;
        (status.state.as_ref()?.waiting.is_some() && !is_ready(&pod)).then_some(status)
    })
    .await?;
    assert_eq!(down.restart_count, 0);
    assert!(kubelet.process("feat", "p", "main").is_none());
    kubelet.allow_starts("feat", "p", "main");
    let back = ready_is(true).await?;
    assert_eq!(main_status(&back).map(|s| s.restart_count), Some(1));

    // Deletion stops main before the sidecar, as Kubernetes does.
    pods.delete("p", &DeleteParams::default()).await?;
    wait_for("pod p gone", TIMEOUT, POLL, || async {
        matches!(pods.get_opt("p").await, Ok(None)).then_some(())
    })
    .await?;
    let stops = std::fs::read_to_string(shared.join("stops"))?;
    assert_eq!(stops.lines().collect::<Vec<_>>(), ["main", "sidecar"]);
    Ok(())
}

/// `exec` preStop hooks (the operator's cockpit runs one): the program comes
/// from a volume of the pod, runs with the container's env and its args,
/// and the container's SIGTERM waits for it; a hook that outlasts the grace
/// period is killed then, and the pod goes anyway.
#[tokio::test]
async fn kubelet_runs_exec_pre_stop_hooks_within_the_grace_period() -> anyhow::Result<()> {
    use joc_ha_tests::kubelet::PodContext;
    use k8s_openapi::api::core::v1::Container;

    let plane = ControlPlane::start().await?;
    let runner =
        move |_pod: &Pod, container: &Container, ctx: &PodContext| -> Option<ProcessSpec> {
            let dir = ctx.mount("/shared")?.to_string_lossy().into_owned();
            let spec = match container.name.as_str() {
                // Puts the hook's program into the volume, as joc-ha-hook does.
                "setup" => ProcessSpec::shell(
                    "cat > \"$DIR/hook\" <<'EOF'\n\
                 #!/bin/sh\n\
                 d=$(dirname \"$0\")\n\
                 echo \"hook $1 $GREETING\" >> \"$d/stops\"\n\
                 if [ \"$1\" = slow ]; then echo $$ > \"$d/hook.pid\"; sleep 600; fi\n\
                 echo \"hook done\" >> \"$d/stops\"\n\
                 EOF\n\
                 chmod 555 \"$DIR/hook\"",
                ),
                "main" => ProcessSpec::shell(
                    "trap 'echo main >> \"$DIR/stops\"; exit 0' TERM; while :; do sleep 0.1; done",
                ),
                _ => return None,
            };
            Some(spec.env("DIR", dir))
        };
    let kubelet = FakeKubelet::start(
        plane.client(),
        FakeKubeletConfig::new(&plane).with_runner(runner),
    )
    .await?;
    plane.create_namespace("hooks").await?;
    let pods: Api<Pod> = Api::namespaced(plane.client(), "hooks");
    let pod = |name: &str, grace: i64, arg: &str| -> anyhow::Result<Pod> {
        from_json(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name },
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "volumes": [{ "name": "shared", "emptyDir": {} }],
                "initContainers": [{ "name": "setup", "image": "example.invalid/setup:1",
                    "volumeMounts": [{ "name": "shared", "mountPath": "/shared" }] }],
                "containers": [{
                    "name": "main", "image": "example.invalid/main:1",
                    "env": [{ "name": "GREETING", "value": "hello" }],
                    "volumeMounts": [{ "name": "shared", "mountPath": "/shared", "readOnly": true }],
                    "lifecycle": { "preStop": { "exec": { "command": ["/shared/hook", arg] } } }
                }]
            }
        }))
    };
    pods.create(&PostParams::default(), &pod("fast", 20, "fast")?)
        .await?;
    pods.create(&PostParams::default(), &pod("slow", 2, "slow")?)
        .await?;
    for name in ["fast", "slow"] {
        wait_for(&format!("pod {name} Ready"), TIMEOUT, POLL, || async {
            is_ready(&pods.get(name).await.ok()?).then_some(())
        })
        .await?;
    }
    let shared = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        Ok(kubelet
            .pod_dir("hooks", name)
            .context("no pod dir")?
            .join("volumes/shared"))
    };
    let (fast, slow) = (shared("fast")?, shared("slow")?);
    let gone = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait_for(&format!("pod {name} gone"), TIMEOUT, POLL, || async {
                matches!(pods.get_opt(name).await, Ok(None)).then_some(())
            })
            .await
        }
    };

    // The hook runs with its args and the container's env, to its end,
    // before the container's SIGTERM.
    pods.delete("fast", &DeleteParams::default()).await?;
    gone("fast").await?;
    let stops = std::fs::read_to_string(fast.join("stops"))?;
    assert_eq!(
        stops.lines().collect::<Vec<_>>(),
        ["hook fast hello", "hook done", "main"]
    );

    // A hook that outlasts the 2 s grace period is killed at its end.
    let deleted = Instant::now();
    pods.delete("slow", &DeleteParams::default()).await?;
    gone("slow").await?;
    let took = deleted.elapsed();
    // The hook never finished (main is then stopped at once: it may
    // still record its SIGTERM).
    let stops = std::fs::read_to_string(slow.join("stops"))?;
    let stops: Vec<&str> = stops.lines().collect();
    assert_eq!(stops.first(), Some(&"hook slow hello"), "{stops:?}");
    assert!(!stops.contains(&"hook done"), "{stops:?}");
    assert!(
        took >= Duration::from_secs(2),
        "the pod went before its grace period ran out ({took:?}): the hook was not waited for"
    );
    let pid: i32 = std::fs::read_to_string(slow.join("hook.pid"))?
        .trim()
        .parse()?;
    assert_eq!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH),
        "the hook's process {pid} still runs after the grace period"
    );
    eprintln!(
        "measured: pod with a 2 s grace period and a hook that never ends gone after {took:.2?}"
    );
    Ok(())
}
