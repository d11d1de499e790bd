//! The operator end to end, from its built binary, on the harness: a real
//! control plane, the fake kubelet (no processes: every container counts as
//! running and Ready), and the operator running under the chart's
//! least-privileged ServiceAccount. No sidecar runs here, so no pod is ever
//! labeled active: these tests cover what the operator alone must do.
//!
//! Needs the operator binary: `cargo build -p joc-ha-operator` (make test
//! builds every binary first).

use joc_ha_crds::pods::is_ready;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    COMPONENT_API_SERVER, COMPONENT_MEMBER, LABEL_CLUSTER, LABEL_COMPONENT, condition, reason,
};
use joc_ha_tests::controlplane::ControlPlane;
use joc_ha_tests::kubelet::{FakeKubelet, FakeKubeletConfig};
use joc_ha_tests::operator::{
    OperatorOptions, OperatorProcess, chart_fullname, install_chart_rbac, install_crd,
    lease_holder, succeeded, write_yaml,
};
use joc_ha_tests::wait::{wait_for, wait_for_ok};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Api, Client, Resource, ResourceExt as _};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const RELEASE: &str = "joc-ha";
const OPERATOR_NAMESPACE: &str = "joc-ha-system";
const NAMESPACE: &str = "js7";

/// Fields drop in order: operators before the kubelet before the plane.
struct Env {
    operators: Vec<OperatorProcess>,
    _kubelet: FakeKubelet,
    plane: ControlPlane,
}

impl Env {
    /// Control plane, fake kubelet, CRD, the chart's operator RBAC, the
    /// namespace `js7`, and `operators` operator processes (`op-0`, `op-1`,
    /// ...) running under the chart's ServiceAccount token.
    async fn start(operators: usize) -> anyhow::Result<Self> {
        let started = Instant::now();
        let plane = ControlPlane::start().await?;
        let kubelet = FakeKubelet::start(plane.client(), FakeKubeletConfig::new(&plane)).await?;
        install_crd(&plane).await?;
        let account = install_chart_rbac(&plane, RELEASE, OPERATOR_NAMESPACE).await?;
        plane.create_namespace(NAMESPACE).await?;
        let token = plane
            .token_for(&account.namespace, &account.service_account)
            .await?;
        let mut processes = Vec::new();
        for n in 0..operators {
            let options = OperatorOptions::new(format!("op-{n}"), OPERATOR_NAMESPACE)
                .lease_name(chart_fullname(RELEASE));
            processes.push(OperatorProcess::start_with_token(&plane, &token, options).await?);
        }
        eprintln!(
            "control plane, kubelet and {operators} operator(s) ready in {:.1?}",
            started.elapsed()
        );
        Ok(Self {
            operators: processes,
            _kubelet: kubelet,
            plane,
        })
    }

    fn client(&self) -> Client {
        self.plane.client()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), NAMESPACE)
    }

    fn operator_logs(&self) -> String {
        self.operators
            .iter()
            .map(OperatorProcess::describe)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ensure_operators_running(&self) -> anyhow::Result<()> {
        self.operators
            .iter()
            .try_for_each(OperatorProcess::ensure_running)
    }
}

fn jocluster(name: &str, spec: serde_json::Value) -> anyhow::Result<JocCluster> {
    let mut full = json!({
        "image": "sosberlin/js7:joc-2-8-1",
        "database": {"type": "postgresql", "secretRef": {"name": format!("{name}-db")}}
    });
    if let (Some(base), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "joc-ha.dev/v1alpha1",
        "kind": "JocCluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": full,
    }))
    .context("building a JocCluster")
}

fn db_secret(name: &str) -> anyhow::Result<Secret> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"url": "postgres://u:p@db/x"},
    }))
    .context("building a Secret")
}

fn status_condition(
    cluster: &JocCluster,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn pods_of(cluster: &str, component: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{LABEL_CLUSTER}={cluster},{LABEL_COMPONENT}={component}"
    ))
}

/// Waits until the cluster has `members` ready member pods (and no others),
/// `api_servers` ready API-server pods, the StatefulSet asks for `members`,
/// and the status says so for the current generation.
async fn wait_reconciled(
    env: &Env,
    name: &str,
    members: i32,
    api_servers: i32,
) -> anyhow::Result<JocCluster> {
    let clusters: Api<JocCluster> = env.api();
    let statefulsets: Api<StatefulSet> = env.api();
    let pods: Api<Pod> = env.api();
    wait_for_ok(
        &format!("{name}: {members} members and {api_servers} API servers Ready in status"),
        TIMEOUT,
        POLL,
        || async {
            env.ensure_operators_running()
                .map_err(|e| format!("{e:#}"))?;
            let sts = statefulsets.get(name).await.map_err(|e| e.to_string())?;
            let replicas = sts.spec.replicas;
            if replicas != Some(members) {
                return Err(format!("StatefulSet replicas {replicas:?}"));
            }
            let member_pods = pods
                .list(&pods_of(name, COMPONENT_MEMBER))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let ready = member_pods.iter().filter(|p| is_ready(p)).count();
            if member_pods.len() != members as usize || ready != members as usize {
                return Err(format!(
                    "{} member pods, {ready} ready: {:?}",
                    member_pods.len(),
                    member_pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                ));
            }
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            let status = cluster.status.clone().unwrap_or_default();
            let summary = (
                status.ready_members,
                status.member_summary.clone(),
                status.ready_api_servers,
                status.api_server_summary.clone(),
                status.observed_generation,
            );
            let want = (
                members,
                Some(format!("{members}/{members}")),
                api_servers,
                Some(format!("{api_servers}/{api_servers}")),
                cluster.metadata.generation,
            );
            if summary == want {
                Ok(cluster)
            } else {
                Err(format!("status {summary:?}, want {want:?}"))
            }
        },
    )
    .await
}

/// Ready endpoints (target pod names) behind a Service.
async fn ready_endpoints(client: Client, service: &str) -> Result<BTreeSet<String>, String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect())
}

// ---- 1. Invalid specs ----

fn dynamic_api(client: Client) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<JocCluster>(&());
    Api::namespaced_with(client, NAMESPACE, &resource)
}

fn raw_cluster(name: &str, spec: serde_json::Value) -> anyhow::Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": "joc-ha.dev/v1alpha1",
        "kind": "JocCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .context("building a raw JocCluster")
}

#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    install_crd(&plane).await?;
    plane.create_namespace(NAMESPACE).await?;
    let api = dynamic_api(plane.client());
    let valid = || {
        json!({
            "members": 2,
            "image": "sosberlin/js7:joc-2-8-1",
            "database": {"type": "postgresql", "secretRef": {"name": "joc-db"}},
        })
    };
    let with = |path: &[&str], value: serde_json::Value| {
        let mut spec = valid();
        let mut at = &mut spec;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        spec
    };
    // (what, spec, texts the API server's message must contain)
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        (
            "members 0",
            with(&["members"], json!(0)),
            vec!["spec.members", "greater than or equal to 1"],
        ),
        (
            "renewInterval above a third of the ttl",
            with(&["lease"], json!({"ttl": "3s", "renewInterval": "2s"})),
            vec![
                "spec.lease",
                "lease.renewInterval must be at most a third of lease.ttl",
            ],
        ),
        (
            "JOC's heartbeat timeout below two polls",
            with(
                &["workload"],
                json!({"jocCluster": {"pollingInterval": "30s", "heartBeatExceededInterval": "40s"}}),
            ),
            vec![
                "spec.workload.jocCluster",
                "heartBeatExceededInterval must be at least twice the pollingInterval",
            ],
        ),
        (
            "unknown workload mode",
            with(&["workload", "mode"], json!("jboss")),
            vec!["spec.workload.mode", "Unsupported value"],
        ),
        (
            "unknown database type",
            with(&["database", "type"], json!("oracle")),
            vec!["spec.database.type", "Unsupported value", "oracle"],
        ),
        (
            "secretRef without name",
            with(&["database", "secretRef"], json!({})),
            vec!["spec.database.secretRef.name", "Required value"],
        ),
        (
            "secretRef with an empty name",
            with(&["database", "secretRef"], json!({"name": ""})),
            vec!["spec.database.secretRef.name", "at least 1 chars long"],
        ),
        (
            "an HTTPS port (not supported yet)",
            with(&["ports"], json!({"http": 4446, "https": 4443})),
            vec!["spec.ports", "ports.https is not supported yet"],
        ),
        (
            "a relative JOC data directory",
            with(&["workload"], json!({"jocDataDirectory": "var/joc"})),
            vec!["spec.workload.jocDataDirectory", "must be an absolute path"],
        ),
        (
            "an unknown security level",
            with(&["securityLevel"], json!("extreme")),
            vec!["spec.securityLevel", "Unsupported value"],
        ),
        (
            "a license without a Secret name",
            with(&["license"], json!({"secretRef": {}})),
            vec!["spec.license.secretRef.name", "Required value"],
        ),
    ];
    for (n, (what, spec, expected)) in cases.into_iter().enumerate() {
        let object = raw_cluster(&format!("bad-{n}"), spec)?;
        match api.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                for text in expected {
                    assert!(
                        status.message.contains(text),
                        "{what}: the message must contain {text:?}: {}",
                        status.message
                    );
                }
                eprintln!("{what}: refused: {}", status.message);
            }
            other => panic!("{what}: must be refused with 422, got {other:?}"),
        }
    }

    // An unknown field, with kubectl's default strict field validation.
    let yaml = "apiVersion: joc-ha.dev/v1alpha1
kind: JocCluster
metadata:
  name: bad-unknown
spec:
  members: 2
  replicas: 3
  image: sosberlin/js7:joc-2-8-1
  database:
    type: postgresql
    secretRef:
      name: joc-db
";
    let path = write_yaml(&plane, yaml)?;
    let output = plane
        .kubectl(["apply", "-n", NAMESPACE, "-f", &path.to_string_lossy()])
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unknown field must be refused");
    assert!(
        stderr.contains("unknown field \"spec.replicas\""),
        "kubectl must name the unknown field: {stderr}"
    );
    eprintln!("unknown field: refused: {}", stderr.trim());

    // Nothing was stored; and the boundary case the lease rule admits is accepted
    // (renewInterval exactly a third of the ttl), so the rules are not too strict.
    let stored = api.list(&ListParams::default()).await?;
    assert!(
        stored.items.is_empty(),
        "refused objects must not be stored: {:?}",
        stored
            .items
            .iter()
            .map(|o| o.name_any())
            .collect::<Vec<_>>()
    );
    let boundary = raw_cluster(
        "ok-boundary",
        with(&["lease"], json!({"ttl": "3s", "renewInterval": "1s"})),
    )?;
    api.create(&PostParams::default(), &boundary)
        .await
        .context("renewInterval = ttl/3 must be accepted")?;
    Ok(())
}

// ---- 2. Missing Secret, then the whole cluster ----

#[tokio::test]
async fn missing_secret_degrades_then_the_cluster_is_built() -> anyhow::Result<()> {
    let env = Env::start(1).await?;
    let client = env.client();
    let clusters: Api<JocCluster> = env.api();
    let created = clusters
        .create(
            &PostParams::default(),
            &jocluster("joc", json!({"members": 3, "apiServers": 1}))?,
        )
        .await?;
    let uid = created.uid().context("no uid")?;

    // Degraded, naming the Secret, with a Warning Event.
    let degraded = wait_for_ok(
        "status Degraded=True reason SecretMissing",
        TIMEOUT,
        POLL,
        || async {
            let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
            match status_condition(&cluster, condition::DEGRADED) {
                Some(c) if c.status == "True" && c.reason == reason::SECRET_MISSING => Ok(c),
                other => Err(format!("Degraded condition {other:?}")),
            }
        },
    )
    .await
    .with_context(|| env.operator_logs())?;
    assert!(
        degraded.message.contains("joc-db"),
        "the message must name the Secret: {}",
        degraded.message
    );
    let events: Api<Event> = env.api();
    let warning = |min_count: i32| {
        let events = events.clone();
        let uid = uid.clone();
        async move {
            wait_for_ok(
                &format!("a Warning Event SecretMissing seen {min_count} time(s)"),
                TIMEOUT,
                POLL,
                || async {
                    let list = events
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let found: Vec<&Event> = list
                        .items
                        .iter()
                        .filter(|e| {
                            e.regarding.as_ref().and_then(|r| r.uid.as_deref())
                                == Some(uid.as_str())
                                && e.reason.as_deref() == Some(reason::SECRET_MISSING)
                        })
                        .collect();
                    match found.as_slice() {
                        [event] => {
                            let count = event.series.as_ref().map_or(1, |s| s.count);
                            if event.type_.as_deref() == Some("Warning") && count >= min_count {
                                Ok((*event).clone())
                            } else {
                                Err(format!("type {:?}, count {count}", event.type_))
                            }
                        }
                        [] => Err("no such Event yet".to_owned()),
                        many => Err(format!(
                            "{} separate Events: repeats must be one Event's series",
                            many.len()
                        )),
                    }
                },
            )
            .await
        }
    };
    let event = warning(1).await?;
    let note = event.note.clone().unwrap_or_default();
    assert!(
        note.contains("joc-db"),
        "the Event must name the Secret: {note}"
    );
    // The operator keeps checking (it requeues every 10 s) without creating
    // anything and without crashing: the third sighting comes from a requeue.
    let again = Instant::now();
    warning(3).await.with_context(|| env.operator_logs())?;
    eprintln!(
        "SecretMissing seen 3 times; the last {:.1?} after the first",
        again.elapsed()
    );
    let statefulsets: Api<StatefulSet> = env.api();
    assert!(
        statefulsets.get_opt("joc").await?.is_none(),
        "no StatefulSet may be created while the Secret is missing"
    );
    env.ensure_operators_running()?;

    // A ConfigMap of joc-ha's earlier layout (JOC's settings, now init
    // container arguments), owned by the cluster: the operator removes it.
    let legacy: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "joc-joc-config", "ownerReferences": [{
            "apiVersion": "joc-ha.dev/v1alpha1", "kind": "JocCluster", "name": "joc",
            "uid": uid, "controller": true}]},
        "data": {"joc.properties": "cluster_id = joc\n"},
    }))?;
    let config_maps: Api<ConfigMap> = env.api();
    config_maps.create(&PostParams::default(), &legacy).await?;

    // The Secret arrives: everything is built.
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    let cluster = wait_reconciled(&env, "joc", 3, 1)
        .await
        .with_context(|| env.operator_logs())?;
    let degraded = status_condition(&cluster, condition::DEGRADED).context("no Degraded")?;
    assert_eq!(degraded.status, "False", "{degraded:?}");

    let owned_by_cluster = |meta: &kube::api::ObjectMeta, what: &str| {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .unwrap_or_else(|| panic!("{what} has no controller owner"));
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("JocCluster", uid.as_str()),
            "{what}"
        );
    };
    let sts = statefulsets.get("joc").await?;
    owned_by_cluster(&sts.metadata, "StatefulSet joc");
    let spec = sts.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.update_strategy.and_then(|s| s.type_).as_deref(),
        Some("OnDelete")
    );
    assert_eq!(spec.service_name.as_deref(), Some("joc-headless"));
    // API servers: a StatefulSet, so each has a stable name and JOC ordering.
    let api_sts = statefulsets.get("joc-api").await?;
    owned_by_cluster(&api_sts.metadata, "StatefulSet joc-api");
    assert_eq!(api_sts.spec.replicas, Some(1));
    assert_eq!(api_sts.spec.service_name.as_deref(), Some("joc-api"));
    wait_for(
        "the legacy ConfigMap to be removed",
        TIMEOUT,
        POLL,
        || async { matches!(config_maps.get_opt("joc-joc-config").await, Ok(None)).then_some(()) },
    )
    .await?;

    // The pods of the image-files layout (the contract with the stand-in).
    let member_sts = statefulsets.get("joc").await?;
    for (sts, init_want, ordering_offset) in [
        (
            &member_sts,
            vec![
                "joc-ha-sidecar",
                "joc-ha-hook",
                "joc-image-files",
                "joc-config",
            ],
            "0",
        ),
        (&api_sts, vec!["joc-image-files", "joc-config"], "50"),
    ] {
        let pod = sts.spec.template.spec.clone().context("pod template")?;
        let init: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, init_want);
        let named = |name: &str| {
            pod.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .context(name.to_owned())
        };
        let files = named("joc-image-files")?;
        assert_eq!(files.image.as_deref(), Some("sosberlin/js7:joc-2-8-1"));
        let config = named("joc-config")?;
        let args = config.args.clone().unwrap_or_default();
        let offset = args
            .iter()
            .position(|a| a == "--ordering-offset")
            .and_then(|i| args.get(i + 1));
        assert_eq!(
            offset.map(String::as_str),
            Some(ordering_offset),
            "{args:?}"
        );
        let cockpit = &pod.containers[0];
        let env_of = |name: &str| {
            cockpit
                .env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .cloned()
        };
        assert_eq!(
            env_of("RUN_JS_HTTP_PORT").and_then(|e| e.value).as_deref(),
            Some("4446")
        );
        // Defined and empty (the API server stores an empty value as none;
        // the kubelet sets the variable to ""): the entrypoint's HTTPS
        // listener is off.
        let https = env_of("RUN_JS_HTTPS_PORT").context("RUN_JS_HTTPS_PORT not set")?;
        assert_eq!(https.value.unwrap_or_default(), "");
        assert!(https.value_from.is_none());
        let password = env_of("JS7_DBMS_PASSWORD")
            .and_then(|e| e.value_from)
            .and_then(|v| v.secret_key_ref)
            .context("JS7_DBMS_PASSWORD from the Secret")?;
        assert_eq!(
            (password.name.as_str(), password.key.as_str()),
            ("joc-db", "password")
        );
        let liveness = cockpit
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.as_deref());
        assert_eq!(liveness, Some("/joc/api/version"));
        let mounts: Vec<&str> = cockpit
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        for path in [
            "/var/sos-berlin.com/js7/joc/resources/joc",
            "/var/sos-berlin.com/js7/joc/webapps/joc/WEB-INF/classes/joc-settings.properties",
        ] {
            assert!(mounts.contains(&path), "{path} not mounted: {mounts:?}");
        }
    }

    // No license with 3 members: a condition and one Warning Event saying
    // that fail-over will not work; the JOC release of the tag is known.
    let cluster = clusters.get("joc").await?;
    let licensed = status_condition(&cluster, condition::LICENSED).context("no Licensed")?;
    assert_eq!(
        (licensed.status.as_str(), licensed.reason.as_str()),
        ("False", reason::NO_CLUSTER_LICENSE),
        "{licensed:?}"
    );
    assert!(
        licensed.message.contains("fail-over will not work"),
        "{}",
        licensed.message
    );
    let version = status_condition(&cluster, condition::JOC_VERSION).context("no JocVersion")?;
    assert_eq!(
        (version.status.as_str(), version.reason.as_str()),
        ("True", reason::SUPPORTED_JOC_VERSION),
        "{version:?}"
    );
    let no_license = wait_for_ok(
        "a Warning Event NoClusterLicense",
        TIMEOUT,
        POLL,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
                        && e.reason.as_deref() == Some(reason::NO_CLUSTER_LICENSE)
                        && e.type_.as_deref() == Some("Warning")
                })
                .ok_or_else(|| "no such Event yet".to_owned())
        },
    )
    .await?;
    assert!(
        no_license
            .note
            .unwrap_or_default()
            .contains("fail-over will not work"),
        "the Event must say what does not work"
    );
    let services: Api<Service> = env.api();
    for name in ["joc", "joc-members", "joc-api", "joc-headless"] {
        let service = services
            .get_opt(name)
            .await?
            .with_context(|| format!("Service {name} missing"))?;
        owned_by_cluster(&service.metadata, &format!("Service {name}"));
    }
    let sidecar = "joc-joc-ha-sidecar";
    owned_by_cluster(
        &env.api::<ServiceAccount>().get(sidecar).await?.metadata,
        "ServiceAccount",
    );
    owned_by_cluster(&env.api::<Role>().get(sidecar).await?.metadata, "Role");
    owned_by_cluster(
        &env.api::<RoleBinding>().get(sidecar).await?.metadata,
        "RoleBinding",
    );
    owned_by_cluster(
        &env.api::<PodDisruptionBudget>().get("joc").await?.metadata,
        "PodDisruptionBudget",
    );

    // kubectl shows the printer columns.
    let table = succeeded(
        "kubectl get joc",
        env.plane.kubectl(["get", "joc", "-n", NAMESPACE]).await?,
    )?;
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["NAME", "ACTIVE", "MEMBERS", "API SERVERS", "PHASE", "AGE"] {
        assert!(header.contains(column), "column {column} missing: {table}");
    }
    let row: Vec<&str> = lines
        .find(|l| l.starts_with("joc "))
        .with_context(|| format!("no row for joc: {table}"))?
        .split_whitespace()
        .collect();
    assert!(
        row.contains(&"3/3") && row.contains(&"1/1"),
        "MEMBERS 3/3 and API SERVERS 1/1 expected: {table}"
    );

    // The API server is behind joc-api only; members behind joc-members only;
    // nothing is active (no sidecar labels a pod), so joc has no endpoint.
    let pods: Api<Pod> = env.api();
    let api_pods: BTreeSet<String> = pods
        .list(&pods_of("joc", COMPONENT_API_SERVER))
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(api_pods.len(), 1, "{api_pods:?}");
    let member_pods: BTreeSet<String> = ["joc-0", "joc-1", "joc-2"].map(String::from).into();
    for (service, want) in [("joc-api", &api_pods), ("joc-members", &member_pods)] {
        wait_for_ok(
            &format!("the endpoints of {service}"),
            TIMEOUT,
            POLL,
            || async {
                let got = ready_endpoints(client.clone(), service).await?;
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}, want {want:?}"))
                }
            },
        )
        .await?;
    }
    assert_eq!(
        ready_endpoints(client.clone(), "joc")
            .await
            .map_err(anyhow::Error::msg)?,
        BTreeSet::new()
    );

    // A license Secret that does not exist degrades, naming it; once it
    // exists with its keys the cluster is Licensed, and the pods mount it.
    let patch = json!({"spec": {"license": {"secretRef": {"name": "js7-license"}}}});
    clusters
        .patch("joc", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let degraded = wait_for_ok(
        "Degraded reason LicenseSecretMissing",
        TIMEOUT,
        POLL,
        || async {
            let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
            match status_condition(&cluster, condition::DEGRADED) {
                Some(c) if c.status == "True" && c.reason == reason::LICENSE_SECRET_MISSING => {
                    Ok(c)
                }
                other => Err(format!("Degraded condition {other:?}")),
            }
        },
    )
    .await
    .with_context(|| env.operator_logs())?;
    assert!(
        degraded.message.contains("js7-license"),
        "{}",
        degraded.message
    );
    let license: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "js7-license"},
        "stringData": {"js7-license.jar": "jar", "js7-license.pem": "key"},
    }))?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &license)
        .await?;
    wait_for_ok("Licensed=True and not Degraded", TIMEOUT, POLL, || async {
        let cluster = clusters.get("joc").await.map_err(|e| e.to_string())?;
        let licensed = status_condition(&cluster, condition::LICENSED);
        let degraded = status_condition(&cluster, condition::DEGRADED);
        match (&licensed, &degraded) {
            (Some(l), Some(d))
                if l.status == "True"
                    && l.reason == reason::LICENSE_GIVEN
                    && d.status == "False" =>
            {
                Ok(())
            }
            _ => Err(format!("Licensed {licensed:?}, Degraded {degraded:?}")),
        }
    })
    .await
    .with_context(|| env.operator_logs())?;
    let sts = statefulsets.get("joc").await?;
    let pod = sts.spec.template.spec.context("pod template")?;
    let secret_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "joc-license")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    assert_eq!(secret_volume.as_deref(), Some("js7-license"));
    let licensed_env = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "joc-ha-sidecar")
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == "JOC_HA_JOC_LICENSED"))
        .and_then(|e| e.value.clone());
    assert_eq!(licensed_env.as_deref(), Some("true"));

    // Credentials never reach the operator's log.
    let log = env.operators[0].log();
    assert!(
        !log.contains("u:p@"),
        "the operator logged the database URL"
    );
    env.ensure_operators_running()?;
    Ok(())
}

// ---- 3. Scaling and deletion ----

async fn set_members(env: &Env, name: &str, members: i32) -> anyhow::Result<()> {
    env.api::<JocCluster>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members}})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn scaling_and_deletion_follow_the_cluster() -> anyhow::Result<()> {
    let env = Env::start(1).await?;
    Api::<Secret>::namespaced(env.client(), NAMESPACE)
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    env.api::<JocCluster>()
        .create(
            &PostParams::default(),
            &jocluster("joc", json!({"members": 2, "apiServers": 1}))?,
        )
        .await?;
    let started = Instant::now();
    wait_reconciled(&env, "joc", 2, 1)
        .await
        .with_context(|| env.operator_logs())?;
    eprintln!("2 members Ready after {:.1?}", started.elapsed());
    let pdbs: Api<PodDisruptionBudget> = env.api();
    assert!(pdbs.get_opt("joc").await?.is_some(), "2 members get a PDB");

    for members in [3, 1] {
        let started = Instant::now();
        set_members(&env, "joc", members).await?;
        wait_reconciled(&env, "joc", members, 1)
            .await
            .with_context(|| env.operator_logs())?;
        eprintln!("scaled to {members} in {:.1?}", started.elapsed());
    }
    // One member: no budget (it would block every drain of its node).
    wait_for("the PDB to go at 1 member", TIMEOUT, POLL, || async {
        matches!(pdbs.get_opt("joc").await, Ok(None)).then_some(())
    })
    .await?;
    set_members(&env, "joc", 2).await?;
    wait_reconciled(&env, "joc", 2, 1)
        .await
        .with_context(|| env.operator_logs())?;
    wait_for("the PDB to return at 2 members", TIMEOUT, POLL, || async {
        matches!(pdbs.get_opt("joc").await, Ok(Some(_))).then_some(())
    })
    .await?;

    // Deleting the JocCluster removes every child, by owner references. Here
    // this takes up to ~40 s: the CRD was created after the controller-manager
    // started, and its garbage collector only learns of new kinds at its next
    // discovery sync (every 30 s). In a cluster where the CRD predates the
    // controller-manager's start, collection starts at once.
    let client = env.client();
    let remaining = || async {
        let mut left = Vec::new();
        let label = ListParams::default().labels(&format!("{LABEL_CLUSTER}=joc"));
        macro_rules! check {
            ($kind:ty, $names:expr) => {
                let api: Api<$kind> = Api::namespaced(client.clone(), NAMESPACE);
                for name in $names {
                    if api
                        .get_opt(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some()
                    {
                        left.push(format!("{} {name}", <$kind as Resource>::kind(&())));
                    }
                }
            };
        }
        check!(StatefulSet, ["joc", "joc-api"]);
        check!(Deployment, ["joc-api"]);
        check!(Service, ["joc", "joc-members", "joc-api", "joc-headless"]);
        check!(ServiceAccount, ["joc-joc-ha-sidecar"]);
        check!(Role, ["joc-joc-ha-sidecar"]);
        check!(RoleBinding, ["joc-joc-ha-sidecar"]);
        check!(PodDisruptionBudget, ["joc"]);
        check!(ConfigMap, ["joc-joc-config"]);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        for pod in pods.list(&label).await.map_err(|e| e.to_string())?.items {
            left.push(format!("Pod {}", pod.name_any()));
        }
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
        for set in sets.list(&label).await.map_err(|e| e.to_string())?.items {
            left.push(format!("ReplicaSet {}", set.name_any()));
        }
        Ok::<_, String>(left)
    };
    let before = remaining().await.map_err(anyhow::Error::msg)?;
    // 10 named objects (two StatefulSets, no Deployment, no ConfigMap), 2
    // member pods and 1 API-server pod (no ReplicaSet).
    assert_eq!(
        before.len(),
        13,
        "every child must exist before the deletion: {before:?}"
    );
    let started = Instant::now();
    env.api::<JocCluster>()
        .delete("joc", &DeleteParams::default())
        .await?;
    let last = std::sync::Mutex::new(before);
    wait_for_ok(
        "every child of the deleted JocCluster to be gone",
        TIMEOUT,
        POLL,
        || async {
            let left = remaining().await?;
            let mut last = last.lock().map_err(|e| e.to_string())?;
            if *last != left {
                eprintln!(
                    "{:>6.1?} after the deletion, left: {left:?}",
                    started.elapsed()
                );
                *last = left.clone();
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    )
    .await?;
    eprintln!(
        "all children gone {:.1?} after the deletion",
        started.elapsed()
    );
    // The Secret is the user's, not the cluster's: it stays.
    assert!(
        Api::<Secret>::namespaced(client, NAMESPACE)
            .get_opt("joc-db")
            .await?
            .is_some()
    );
    env.ensure_operators_running()?;
    Ok(())
}

// ---- 4. Leader election ----

#[tokio::test]
async fn leader_election_hands_over_when_the_leader_is_killed() -> anyhow::Result<()> {
    let mut env = Env::start(2).await?;
    let client = env.client();
    let lease = chart_fullname(RELEASE);

    // Exactly one leads, and it is the Lease's holder.
    let (leader, follower) = wait_for_ok("one leader", TIMEOUT, POLL, || async {
        let holder = lease_holder(client.clone(), OPERATOR_NAMESPACE, &lease)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the Lease has no holder")?;
        let mut leading = Vec::new();
        for (n, operator) in env.operators.iter().enumerate() {
            if operator.is_leading().await.map_err(|e| e.to_string())? {
                leading.push(n);
            }
        }
        match leading.as_slice() {
            [one] if env.operators[*one].identity() == holder => Ok((*one, 1 - *one)),
            _ => Err(format!("holder {holder}, leading {leading:?}")),
        }
    })
    .await
    .with_context(|| env.operator_logs())?;
    let (leader_id, follower_id) = (
        env.operators[leader].identity().to_owned(),
        env.operators[follower].identity().to_owned(),
    );
    eprintln!("{leader_id} leads, {follower_id} follows");

    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    env.api::<JocCluster>()
        .create(
            &PostParams::default(),
            &jocluster("joc", json!({"members": 1}))?,
        )
        .await?;
    wait_reconciled(&env, "joc", 1, 0)
        .await
        .with_context(|| env.operator_logs())?;
    assert!(
        !env.operators[follower].is_leading().await?,
        "the follower must not lead while the leader lives"
    );

    // SIGKILL: no release of the Lease; the follower waits for its expiry.
    let killed = Instant::now();
    let dead = env.operators.remove(leader);
    dead.process().kill().await?;
    let follower = 0;
    set_members(&env, "joc", 2).await?;
    let statefulsets: Api<StatefulSet> = env.api();
    let handover = Duration::from_secs(30);
    wait_for_ok(
        "the follower to take over and scale the StatefulSet to 2",
        handover,
        POLL,
        || async {
            let replicas = statefulsets
                .get("joc")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .replicas;
            if replicas == Some(2) {
                Ok(())
            } else {
                Err(format!("replicas {replicas:?}"))
            }
        },
    )
    .await
    .with_context(|| env.operators[follower].describe())?;
    let took = killed.elapsed();
    eprintln!("{follower_id} took over and reconciled {took:.1?} after {leader_id} was killed");
    assert_eq!(
        lease_holder(client.clone(), OPERATOR_NAMESPACE, &lease).await?,
        Some(follower_id.clone())
    );
    assert!(env.operators[follower].is_leading().await?);
    env.operators[follower].ensure_running()?;
    wait_reconciled(&env, "joc", 2, 0).await?;
    if took > handover {
        bail!("the hand-over took {took:?}");
    }
    Ok(())
}

// ---- Issue 19: names that cannot deploy, names that collide, pods that cannot be created ----

/// A Warning Event about `uid` with `reason`, once it exists.
async fn warning_event(env: &Env, uid: &str, reason: &str) -> anyhow::Result<Event> {
    let events: Api<Event> = env.api();
    wait_for_ok(
        &format!("a Warning Event {reason}"),
        TIMEOUT,
        POLL,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid)
                        && e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some("Warning")
                })
                .ok_or_else(|| "no such Event yet".to_owned())
        },
    )
    .await
    .with_context(|| env.operator_logs())
}

/// Degraded=True with `reason`, once the status says so.
async fn wait_degraded(
    env: &Env,
    name: &str,
    reason: &str,
) -> anyhow::Result<(
    JocCluster,
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
)> {
    let clusters: Api<JocCluster> = env.api();
    wait_for_ok(
        &format!("{name}: Degraded=True reason {reason}"),
        TIMEOUT,
        POLL,
        || async {
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            match status_condition(&cluster, condition::DEGRADED) {
                Some(c) if c.status == "True" && c.reason == reason => Ok((cluster, c)),
                other => Err(format!("Degraded condition {other:?}")),
            }
        },
    )
    .await
    .with_context(|| env.operator_logs())
}

/// Issue 19, case 6: `dot.test` and a 60-character name passed `kubectl
/// apply`, and a 54-character name deployed objects whose StatefulSet could
/// not create pods. Now kubectl's answer refuses them with the limit and
/// why, and the longest allowed name (48) deploys members and API servers.
#[tokio::test]
async fn names_that_cannot_deploy_are_refused_and_the_longest_allowed_deploys() -> anyhow::Result<()>
{
    let env = Env::start(1).await?;
    let apply = |name: String| {
        let yaml = format!(
            "apiVersion: joc-ha.dev/v1alpha1
kind: JocCluster
metadata:
  name: {name}
spec:
  members: 2
  apiServers: 1
  image: sosberlin/js7:joc-2-8-1
  database:
    type: postgresql
    secretRef:
      name: joc-db
"
        );
        let plane = &env.plane;
        async move {
            let path = write_yaml(plane, &yaml)?;
            plane
                .kubectl(["apply", "-n", NAMESPACE, "-f", &path.to_string_lossy()])
                .await
        }
    };
    // (name, texts kubectl's answer must contain)
    let refused: Vec<(String, Vec<&str>)> = vec![
        ("dot.test".into(), vec!["DNS-1035 label", "no '.'"]),
        (
            "a".repeat(49),
            vec!["at most 48 characters", "controller-revision-hash"],
        ),
        ("b".repeat(54), vec!["at most 48 characters"]),
        ("c".repeat(60), vec!["at most 48 characters"]),
        ("9lives".into(), vec!["DNS-1035 label"]),
    ];
    for (name, texts) in &refused {
        let output = apply(name.clone()).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} must be refused");
        for text in texts {
            assert!(
                stderr.contains(text),
                "{name}: kubectl must say {text:?}: {stderr}"
            );
        }
        eprintln!("{name}: refused: {}", stderr.trim());
    }
    let clusters: Api<JocCluster> = env.api();
    assert!(
        clusters
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "a refused name must store nothing"
    );

    // The longest allowed name: every object, and its pods get created.
    let longest = format!("l{}", "o".repeat(46)) + "g";
    assert_eq!(longest.len(), 48);
    Api::<Secret>::namespaced(env.client(), NAMESPACE)
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    succeeded(
        "kubectl apply (48 characters)",
        apply(longest.clone()).await?,
    )?;
    let cluster = wait_reconciled(&env, &longest, 2, 1)
        .await
        .with_context(|| env.operator_logs())?;
    let degraded = status_condition(&cluster, condition::DEGRADED).context("no Degraded")?;
    assert_eq!(degraded.status, "False", "{degraded:?}");
    let pods: Api<Pod> = env.api();
    let api_pod = pods.get(&format!("{longest}-api-0")).await?;
    let hash = api_pod
        .labels()
        .get("controller-revision-hash")
        .context("no controller-revision-hash")?;
    eprintln!(
        "{longest}: pods created; longest label value {} characters",
        hash.len()
    );
    assert!(hash.len() <= 63, "{hash}");
    Ok(())
}

/// Issue 19, case 2: a JocCluster named `joc-members` beside `joc` took
/// `joc`'s Service `joc-members` (selector and owner), and deleting it
/// garbage-collected `joc`'s Service; `-api` and `-headless` alike. Now the
/// newcomer takes nothing and applies nothing: Degraded/NameConflict, a
/// Warning Event naming the object and its owner, Available=False; `joc`'s
/// Services keep selector, owner, ClusterIP and uid, also after the
/// newcomers are deleted.
#[tokio::test]
async fn a_cluster_named_like_anothers_objects_takes_nothing() -> anyhow::Result<()> {
    let env = Env::start(1).await?;
    let clusters: Api<JocCluster> = env.api();
    let secrets: Api<Secret> = env.api();
    let services: Api<Service> = env.api();
    let statefulsets: Api<StatefulSet> = env.api();
    secrets
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    let joc = clusters
        .create(
            &PostParams::default(),
            &jocluster("joc", json!({"members": 2, "apiServers": 1}))?,
        )
        .await?;
    let joc_uid = joc.uid().context("no uid")?;
    wait_reconciled(&env, "joc", 2, 1)
        .await
        .with_context(|| env.operator_logs())?;
    // What must not change: (uid, ClusterIP, selector, controller uid).
    let fingerprint = |service: &Service| {
        (
            service.uid(),
            service.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            service.spec.as_ref().and_then(|s| s.selector.clone()),
            service
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
        )
    };
    let joc_services = ["joc", "joc-members", "joc-api", "joc-headless"];
    let mut before = Vec::new();
    for name in joc_services {
        let service = services.get(name).await?;
        assert_eq!(fingerprint(&service).3.as_deref(), Some(joc_uid.as_str()));
        before.push(fingerprint(&service));
    }
    let api_sts_before = statefulsets.get("joc-api").await?.uid();

    // (newcomer, the object of joc's its name collides with)
    let newcomers = [
        ("joc-members", "Service joc-members"),
        ("joc-api", "joc-api"),
        ("joc-headless", "Service joc-headless"),
    ];
    for (newcomer, _) in newcomers {
        secrets
            .create(
                &PostParams::default(),
                &db_secret(&format!("{newcomer}-db"))?,
            )
            .await?;
        clusters
            .create(
                &PostParams::default(),
                &jocluster(newcomer, json!({"members": 2, "apiServers": 1}))?,
            )
            .await?;
    }
    for (newcomer, object) in newcomers {
        let (cluster, degraded) = wait_degraded(&env, newcomer, reason::NAME_CONFLICT).await?;
        assert!(
            degraded.message.contains(object)
                && degraded.message.contains("belongs to JocCluster joc"),
            "{newcomer}: the condition names the object and its owner: {}",
            degraded.message
        );
        let available = status_condition(&cluster, condition::AVAILABLE).context("no Available")?;
        assert_eq!(available.status, "False", "{newcomer}: {available:?}");
        let uid = cluster.uid().context("no uid")?;
        let event = warning_event(&env, &uid, reason::NAME_CONFLICT).await?;
        let note = event.note.unwrap_or_default();
        assert!(
            note.contains(object) && note.contains("JocCluster joc"),
            "{note}"
        );
        eprintln!("{newcomer}: {note}");
        // Nothing of the newcomer was applied, not even its own names.
        assert!(
            services
                .get_opt(&format!("{newcomer}-members"))
                .await?
                .is_none(),
            "{newcomer}: nothing may be applied while a name is taken"
        );
    }
    for (name, want) in joc_services.iter().zip(&before) {
        assert_eq!(
            &fingerprint(&services.get(name).await?),
            want,
            "{name} changed"
        );
    }

    // Deleting the newcomers (and waiting until the garbage collector has
    // handled their dependents: foreground deletion) leaves joc's objects.
    for (newcomer, _) in newcomers {
        clusters
            .delete(newcomer, &DeleteParams::foreground())
            .await?;
    }
    wait_for("the newcomers to be gone", TIMEOUT, POLL, || async {
        let mut gone = true;
        for (newcomer, _) in newcomers {
            gone &= matches!(clusters.get_opt(newcomer).await, Ok(None));
        }
        gone.then_some(())
    })
    .await?;
    for (name, want) in joc_services.iter().zip(&before) {
        assert_eq!(
            &fingerprint(&services.get(name).await?),
            want,
            "{name} changed"
        );
    }
    assert_eq!(statefulsets.get("joc-api").await?.uid(), api_sts_before);
    let joc = wait_reconciled(&env, "joc", 2, 1).await?;
    let degraded = status_condition(&joc, condition::DEGRADED).context("no Degraded")?;
    assert_eq!(degraded.status, "False", "{degraded:?}");
    env.ensure_operators_running()?;
    Ok(())
}

/// Issue 19, Degraded: a StatefulSet that cannot create its pods (here a
/// pod quota) made no difference to the status ("no problem found"). Now
/// Degraded says PodCreateFailed with the StatefulSet's reason.
#[tokio::test]
async fn pods_that_cannot_be_created_degrade_the_cluster() -> anyhow::Result<()> {
    let env = Env::start(1).await?;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "one-pod"},
        "spec": {"hard": {"pods": "1"}},
    }))?;
    env.api::<k8s_openapi::api::core::v1::ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await?;
    Api::<Secret>::namespaced(env.client(), NAMESPACE)
        .create(&PostParams::default(), &db_secret("joc-db")?)
        .await?;
    env.api::<JocCluster>()
        .create(
            &PostParams::default(),
            &jocluster("joc", json!({"members": 2}))?,
        )
        .await?;
    let (cluster, degraded) = wait_degraded(&env, "joc", reason::POD_CREATE_FAILED).await?;
    assert!(
        degraded.message.contains("exceeded quota"),
        "the condition says why: {}",
        degraded.message
    );
    assert_eq!(
        cluster.status.as_ref().and_then(|s| s.phase),
        Some(joc_ha_crds::v1alpha1::Phase::Degraded)
    );
    eprintln!("Degraded: {}", degraded.message);
    Ok(())
}
