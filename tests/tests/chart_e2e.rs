//! The Helm chart end to end, on the harness: lint and render, a server-side
//! dry run of everything it renders, install / upgrade / uninstall, the
//! examples, the restricted Pod Security profile, the operator's Secret
//! rights, and the sidecar admission policies.
//!
//! Where the chart's operator pods run, the fake kubelet runs the built
//! `joc-ha-operator` binary in them ([`ChartOperatorRunner`]), standing for
//! the image: with the env the chart renders and the pod's own
//! ServiceAccount token. No sidecar runs (JocCluster containers get no
//! process and count as Ready), so no pod is ever labeled active.
//!
//! Needs the operator binary: `cargo build -p joc-ha-operator` (make test
//! builds every binary first).

use joc_ha_crds::pods::is_ready;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{LABEL_CLUSTER, LABEL_ROLE};
use joc_ha_tests::controlplane::ControlPlane;
use joc_ha_tests::kubelet::{FakeKubelet, FakeKubeletConfig};
use joc_ha_tests::operator::{
    CHART_OPERATOR_CONTAINER, ChartOperatorRunner, chart_dir, chart_fullname, examples_dir,
    helm_template, install_chart_rbac, kubectl_apply, lease_holder, succeeded, workspace_dir,
    write_yaml,
};
use joc_ha_tests::wait::{wait_for, wait_for_ok};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const RELEASE: &str = "joc-ha";
const OPERATOR_NAMESPACE: &str = "joc-ha-system";
const CRD_NAME: &str = "jocclusters.joc-ha.dev";

fn yaml_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(document).context("parsing rendered YAML")?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn kind_and_name(object: &serde_json::Value) -> (String, String) {
    (
        object["kind"].as_str().unwrap_or_default().to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// `helm install` (or `upgrade`) of the chart as `RELEASE` in `namespace`.
async fn helm(plane: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let output = plane.helm(args).await?;
    succeeded(&format!("helm {}", args.join(" ")), output)
}

/// The chart installed with the operator pods run by the fake kubelet.
/// Fields drop in order: kubelet (operator processes) before the plane.
struct Installed {
    kubelet: FakeKubelet,
    plane: ControlPlane,
}

impl Installed {
    /// Control plane, fake kubelet running the chart's operator pods, and the
    /// chart installed in `joc-ha-system` (created by helm unless
    /// `precreated`), with `extra` helm args; waits for the operator.
    async fn start(precreated: bool, extra: &[&str]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let plane = ControlPlane::start().await?;
        let kubelet = FakeKubelet::start(
            plane.client(),
            FakeKubeletConfig::new(&plane).with_runner(ChartOperatorRunner::new()?),
        )
        .await?;
        let this = Self { kubelet, plane };
        if !precreated {
            this.install(true, extra).await?;
        }
        eprintln!(
            "control plane and kubelet ready in {:.1?}",
            started.elapsed()
        );
        Ok(this)
    }

    async fn install(&self, create_namespace: bool, extra: &[&str]) -> anyhow::Result<()> {
        let chart = chart_dir();
        let chart = chart.to_string_lossy();
        let mut args = vec![
            "install",
            RELEASE,
            &chart,
            "--namespace",
            OPERATOR_NAMESPACE,
        ];
        if create_namespace {
            args.push("--create-namespace");
        }
        args.extend_from_slice(extra);
        let started = Instant::now();
        helm(&self.plane, &args).await?;
        wait_crd_established(&self.plane).await?;
        let pods = self.wait_operator_rolled_out().await?;
        eprintln!(
            "chart installed, operator pods {pods:?} Ready in {:.1?}",
            started.elapsed()
        );
        Ok(())
    }

    fn client(&self) -> Client {
        self.plane.client()
    }

    /// Waits until the operator Deployment has rolled out (every replica
    /// updated and Ready, no old pod left) and one of its pods holds the
    /// leader Lease; returns the pod names.
    async fn wait_operator_rolled_out(&self) -> anyhow::Result<BTreeSet<String>> {
        let deployments: Api<Deployment> = Api::namespaced(self.client(), OPERATOR_NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(self.client(), OPERATOR_NAMESPACE);
        let name = chart_fullname(RELEASE);
        wait_for_ok(
            "the operator Deployment rolled out and leading",
            TIMEOUT,
            POLL,
            || async {
                let deployment = deployments.get(&name).await.map_err(|e| e.to_string())?;
                let want = deployment.spec.replicas.unwrap_or(1);
                let status = deployment.status.clone().unwrap_or_default();
                let rolled_out = status.observed_generation == deployment.metadata.generation
                    && status.updated_replicas == Some(want)
                    && status.ready_replicas == Some(want)
                    && status.replicas == Some(want);
                if !rolled_out {
                    return Err(format!("Deployment status {status:?}"));
                }
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=joc-ha-operator"))
                    .await
                    .map_err(|e| e.to_string())?;
                let names: BTreeSet<String> = list.items.iter().map(|p| p.name_any()).collect();
                if names.len() != want as usize || !list.items.iter().all(is_ready) {
                    return Err(format!("operator pods {names:?}"));
                }
                let holder = lease_holder(self.client(), OPERATOR_NAMESPACE, &name)
                    .await
                    .map_err(|e| e.to_string())?;
                match holder {
                    Some(holder) if names.contains(&holder) => Ok(names),
                    other => Err(format!("Lease holder {other:?}, pods {names:?}")),
                }
            },
        )
        .await
        .with_context(|| self.operator_logs())
    }

    /// The tail of every operator container's log, for failures.
    fn operator_logs(&self) -> String {
        let pods_dir = self.kubelet.dir().join("pods");
        let mut out = String::new();
        for entry in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
            let log = entry
                .path()
                .join("logs")
                .join(format!("{CHART_OPERATOR_CONTAINER}.log"));
            if log.is_file() {
                out.push_str(&format!(
                    "---- {} ----\n{}\n",
                    log.display(),
                    joc_ha_tests::process::log_tail(&log, 30)
                ));
            }
        }
        out
    }
}

async fn wait_crd_established(plane: &ControlPlane) -> anyhow::Result<()> {
    joc_ha_tests::operator::wait_crd_established(plane.client(), CRD_NAME).await
}

/// Creates a namespace, optionally enforcing the restricted Pod Security profile.
async fn create_namespace(
    plane: &ControlPlane,
    name: &str,
    restricted: bool,
) -> anyhow::Result<()> {
    if !restricted {
        return plane.create_namespace(name).await;
    }
    let namespaces: Api<Namespace> = Api::all(plane.client());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "pod-security.kubernetes.io/enforce".to_owned(),
                        "restricted".to_owned(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(plane.client(), name);
    wait_for(
        "the namespace's default ServiceAccount",
        TIMEOUT,
        POLL,
        || async { accounts.get_opt("default").await.ok().flatten() },
    )
    .await?;
    Ok(())
}

/// What a JocCluster asks for and how far it got.
async fn wait_cluster_ready(
    client: Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<JocCluster> {
    let clusters: Api<JocCluster> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    wait_for_ok(
        &format!("JocCluster {namespace}/{name} reconciled with every pod Ready"),
        TIMEOUT,
        POLL,
        || async {
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            let (members, api_servers) = (cluster.spec.members, cluster.spec.api_servers);
            let sts = statefulsets
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no StatefulSet yet")?;
            if sts.spec.replicas != Some(members) {
                return Err(format!("StatefulSet replicas {:?}", sts.spec.replicas));
            }
            let list = pods
                .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={name}")))
                .await
                .map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|p| is_ready(p)).count();
            let want = (members + api_servers) as usize;
            if list.items.len() != want || ready != want {
                return Err(format!(
                    "{} pods, {ready} Ready, want {want}",
                    list.items.len()
                ));
            }
            let status = cluster.status.clone().unwrap_or_default();
            let observed = (
                status.observed_generation,
                status.ready_members,
                status.ready_api_servers,
            );
            if observed == (cluster.metadata.generation, members, api_servers) {
                Ok(cluster)
            } else {
                Err(format!(
                    "status (observedGeneration, readyMembers, readyApiServers) {observed:?}"
                ))
            }
        },
    )
    .await
}

// ---- 5. Lint and render ----

#[tokio::test]
async fn chart_lints_renders_every_option_and_passes_a_server_dry_run() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    let chart = chart_dir();
    let chart_path = chart.to_string_lossy();
    helm(&plane, &["lint", "--strict", &chart_path]).await?;

    // The values schema refuses what the operator would refuse.
    let bad = plane
        .helm([
            "template",
            RELEASE,
            &chart_path,
            "--kube-version",
            "1.37.2",
            "--set",
            "operator.logFormat=xml",
        ])
        .await?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "logFormat=xml must be refused");
    assert!(
        stderr.contains("logFormat"),
        "the error must name the value: {stderr}"
    );

    let all_on = [
        "--include-crds",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prometheus,\
         metrics.prometheusRule.enabled=true,metrics.prometheusRule.labels.release=prometheus,\
         networkPolicy.enabled=true,\
         sidecarAdmissionPolicy.enabled=true,roleLabelGuard.enabled=true,operator.logFormat=json,\
         operator.imagePullSecrets[0].name=registry,operator.podAnnotations.team=js7,\
         operator.nodeSelector.kubernetes\\.io/os=linux,\
         operator.tolerations[0].key=dedicated,operator.tolerations[0].operator=Exists",
    ];
    let rendered = helm_template(&plane, RELEASE, OPERATOR_NAMESPACE, &all_on).await?;
    let documents = yaml_documents(&rendered)?;
    let objects: BTreeSet<(String, String)> = documents.iter().map(kind_and_name).collect();
    let fullname = chart_fullname(RELEASE);
    let expected = [
        ("CustomResourceDefinition", CRD_NAME.to_owned()),
        ("ServiceAccount", fullname.clone()),
        ("ClusterRole", fullname.clone()),
        ("ClusterRoleBinding", fullname.clone()),
        ("Role", format!("{fullname}-leader-election")),
        ("RoleBinding", format!("{fullname}-leader-election")),
        ("Deployment", fullname.clone()),
        ("Service", format!("{fullname}-metrics")),
        ("NetworkPolicy", fullname.clone()),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-sidecar-pods"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-sidecar-pods"),
        ),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-sidecar-jocclusters"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-sidecar-jocclusters"),
        ),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-role-label-guard"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-role-label-guard"),
        ),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-sidecar-events"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-sidecar-events"),
        ),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-role-label-guard"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-role-label-guard"),
        ),
        ("ServiceMonitor", fullname.clone()),
        ("PodMonitor", format!("{fullname}-sidecars")),
        ("PrometheusRule", fullname.clone()),
    ];
    let expected: BTreeSet<(String, String)> = expected
        .into_iter()
        .map(|(kind, name)| (kind.to_owned(), name))
        .collect();
    assert_eq!(objects, expected, "rendered objects with every option on");

    // The harness has no Prometheus operator: the monitoring kinds are checked
    // here, as rendered, and left out of the dry run.
    let monitoring: Vec<&serde_json::Value> = documents
        .iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
        })
        .collect();
    assert_eq!(monitoring.len(), 3);
    for object in &monitoring {
        assert_eq!(
            object["metadata"]["labels"]["release"], "prometheus",
            "metrics.*.labels reach every monitoring object: {object}"
        );
    }
    // The alerts use metrics the sidecar exports.
    let sidecar_metrics = std::fs::read_to_string(workspace_dir().join("sidecar/src/metrics.rs"))
        .context("reading the sidecar's metric names")?;
    let rule = monitoring
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .context("no PrometheusRule")?;
    for alert in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .context("no rules")?
    {
        let expr = alert["expr"].as_str().unwrap_or_default();
        let metric = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|word| word.starts_with("joc_ha_"))
            .with_context(|| format!("alert without a joc_ha_ metric: {expr}"))?;
        assert!(
            sidecar_metrics.contains(metric),
            "alert {} uses {metric}, which the sidecar does not export",
            alert["alert"]
        );
    }

    // Every built-in object passes the API server's validation and admission.
    plane.create_namespace(OPERATOR_NAMESPACE).await?;
    let builtin: Vec<String> = documents
        .iter()
        .filter(|d| !monitoring.contains(d))
        .map(serde_yaml::to_string)
        .collect::<Result<_, _>>()?;
    let dry_run = kubectl_apply(&plane, &builtin.join("---\n"), &["--dry-run=server"]).await?;
    let lines: Vec<&str> = dry_run.lines().collect();
    assert_eq!(lines.len(), builtin.len(), "one line per object: {dry_run}");
    assert!(
        lines.iter().all(|l| l.ends_with("(server dry run)")),
        "{dry_run}"
    );
    // A dry run stores nothing.
    let roles: Api<ClusterRole> = Api::all(plane.client());
    assert!(roles.get_opt(&fullname).await?.is_none());

    // The defaults render too (no optional object).
    let defaults = helm_template(&plane, RELEASE, OPERATOR_NAMESPACE, &[]).await?;
    let kinds: BTreeSet<String> = yaml_documents(&defaults)?
        .iter()
        .map(|d| kind_and_name(d).0)
        .collect();
    assert!(kinds.contains("ValidatingAdmissionPolicy"), "{kinds:?}");
    for optional in [
        "NetworkPolicy",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(
            !kinds.contains(optional),
            "{optional} must be off by default"
        );
    }
    Ok(())
}

// ---- 6. Install, examples, upgrade, uninstall ----

/// Name, members and API servers of the JocCluster in an example file.
fn example_cluster(path: &Path) -> anyhow::Result<(String, i32, i32)> {
    let text = std::fs::read_to_string(path)?;
    let documents = yaml_documents(&text)?;
    let cluster = documents
        .iter()
        .find(|d| d["kind"] == "JocCluster")
        .with_context(|| format!("{} holds no JocCluster", path.display()))?;
    let cluster: JocCluster = serde_json::from_value(cluster.clone())
        .with_context(|| format!("{}: not a valid JocCluster", path.display()))?;
    Ok((
        cluster.name_any(),
        cluster.spec.members,
        cluster.spec.api_servers,
    ))
}

#[tokio::test]
async fn chart_installs_runs_the_examples_upgrades_and_uninstalls() -> anyhow::Result<()> {
    let env = Installed::start(false, &[]).await?;
    let client = env.client();

    // Every example, in its own namespace, as a user would apply it (its
    // Secret points at a database that does not exist here, which the
    // operator does not need: it checks the Secret's keys, never connects).
    // No sidecar runs, so no member becomes active: the clusters are
    // reconciled and their pods Ready, but no endpoint is active. (The fake
    // kubelet binds every pod to its one Node, so `spreadMembers: required`
    // does not keep a member Pending here as a scheduler would.)
    let examples = example_files()?;
    assert!(examples.len() >= 3, "examples: {examples:?}");
    let mut applied = Vec::new();
    for example in &examples {
        let stem = example
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("example without a name")?;
        let namespace = format!("ex-{stem}");
        env.plane.create_namespace(&namespace).await?;
        let (name, members, api_servers) = example_cluster(example)?;
        let output = env
            .plane
            .kubectl(["apply", "-n", &namespace, "-f", &example.to_string_lossy()])
            .await?;
        succeeded(&format!("kubectl apply -f {}", example.display()), output)?;
        applied.push((namespace, name, members, api_servers));
    }
    for (namespace, name, members, api_servers) in &applied {
        let started = Instant::now();
        let cluster = wait_cluster_ready(client.clone(), namespace, name)
            .await
            .with_context(|| env.operator_logs())?;
        let degraded = cluster
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
            .context("no Degraded condition")?;
        assert_eq!(degraded.status, "False", "{namespace}/{name}: {degraded:?}");
        assert_eq!(
            cluster
                .status
                .as_ref()
                .and_then(|s| s.active_member.clone()),
            None,
            "no sidecar runs, so nothing can be active"
        );
        eprintln!(
            "example {namespace}/{name}: {members} members, {api_servers} API servers Ready in {:.1?}",
            started.elapsed()
        );
    }

    // helm upgrade with a changed value rolls the operator: the new pods log JSON
    // and the new leader reconciles.
    let before = env.wait_operator_rolled_out().await?;
    let chart = chart_dir();
    helm(
        &env.plane,
        &[
            "upgrade",
            RELEASE,
            &chart.to_string_lossy(),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--reuse-values",
            "--set",
            "operator.logFormat=json",
        ],
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let deployment = deployments.get(&chart_fullname(RELEASE)).await?;
    let env_vars = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    assert!(
        env_vars
            .iter()
            .any(|v| v.name == "JOC_HA_LOG_FORMAT" && v.value.as_deref() == Some("json")),
        "{env_vars:?}"
    );
    let started = Instant::now();
    let after = wait_for_ok(
        "new operator pods after the upgrade",
        TIMEOUT,
        POLL,
        || async {
            let pods = env
                .wait_operator_rolled_out()
                .await
                .map_err(|e| format!("{e:#}"))?;
            if pods.is_disjoint(&before) {
                Ok(pods)
            } else {
                Err(format!("old pods remain: {pods:?}"))
            }
        },
    )
    .await?;
    eprintln!("upgrade rolled out in {:.1?}: {after:?}", started.elapsed());
    let leader = lease_holder(client.clone(), OPERATOR_NAMESPACE, &chart_fullname(RELEASE))
        .await?
        .context("no leader after the upgrade")?;
    let (namespace, name, members, _) = applied.first().cloned().context("no example")?;
    Api::<JocCluster>::namespaced(client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members + 1}})),
        )
        .await?;
    wait_cluster_ready(client.clone(), &namespace, &name)
        .await
        .with_context(|| env.operator_logs())?;
    let log = env
        .kubelet
        .container_log(OPERATOR_NAMESPACE, &leader, CHART_OPERATOR_CONTAINER)
        .context("no log of the leader")?;
    let log = std::fs::read_to_string(&log)?;
    let json_lines = log
        .lines()
        .filter(|l| !l.starts_with("==="))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|_| ()))
        .collect::<Result<Vec<_>, _>>();
    assert!(
        json_lines.as_ref().is_ok_and(|lines| !lines.is_empty()),
        "after the upgrade the operator logs JSON lines only: {json_lines:?}\n{log}"
    );

    // helm uninstall removes every chart object; the CRD stays (Helm installs
    // crds/ once and never upgrades or deletes them, so that uninstalling the
    // operator cannot delete every JocCluster), and with it the JocClusters.
    let manifest = helm(
        &env.plane,
        &[
            "get",
            "manifest",
            RELEASE,
            "--namespace",
            OPERATOR_NAMESPACE,
        ],
    )
    .await?;
    let released: BTreeSet<(String, String)> = yaml_documents(&manifest)?
        .iter()
        .map(kind_and_name)
        .collect();
    let fullname = chart_fullname(RELEASE);
    for object in [
        ("ClusterRole", fullname.clone()),
        ("ClusterRoleBinding", fullname.clone()),
        ("Deployment", fullname.clone()),
        (
            "ValidatingAdmissionPolicy",
            format!("{fullname}-sidecar-pods"),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            format!("{fullname}-sidecar-jocclusters"),
        ),
    ] {
        let object = (object.0.to_owned(), object.1);
        assert!(
            released.contains(&object),
            "{object:?} not in the release: {released:?}"
        );
    }
    let manifest = write_yaml(&env.plane, &manifest)?;
    let manifest = manifest.to_string_lossy();
    helm(
        &env.plane,
        &["uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE],
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    wait_for_ok(
        "every object of the release to be gone",
        TIMEOUT,
        POLL,
        || async {
            let output = env
                .plane
                .kubectl(["get", "-f", &manifest, "--ignore-not-found", "-o", "name"])
                .await
                .map_err(|e| e.to_string())?;
            let mut left: Vec<String> = succeeded("kubectl get -f <release manifest>", output)
                .map_err(|e| e.to_string())?
                .lines()
                .map(str::to_owned)
                .collect();
            let operators = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=joc-ha-operator"))
                .await
                .map_err(|e| e.to_string())?;
            left.extend(
                operators
                    .items
                    .iter()
                    .map(|p| format!("pod/{}", p.name_any())),
            );
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    )
    .await?;
    let releases = helm(&env.plane, &["list", "--all-namespaces", "--all", "-q"]).await?;
    assert!(releases.trim().is_empty(), "helm still lists {releases}");
    assert!(
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(CRD_NAME)
            .await?
            .is_some(),
        "helm uninstall must keep the CRD"
    );
    for (namespace, name, _, _) in &applied {
        assert!(
            Api::<JocCluster>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .is_some(),
            "JocCluster {namespace}/{name} must survive the uninstall"
        );
    }
    Ok(())
}

// ---- 7. Restricted Pod Security ----

/// Core Events in `namespace` that mention PodSecurity.
async fn pod_security_events(client: Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let events: Api<CoreEvent> = Api::namespaced(client, namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|e| e.message.clone())
        .filter(|m| m.contains("PodSecurity"))
        .collect())
}

#[tokio::test]
async fn restricted_pod_security_admits_the_operator_and_every_cluster_pod() -> anyhow::Result<()> {
    let env = Installed::start(true, &[]).await?;
    let client = env.client();
    create_namespace(&env.plane, OPERATOR_NAMESPACE, true).await?;

    // The profile is enforced here: a pod without any hardening is refused.
    let careless: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "careless"},
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x:1"}]}
    }))?;
    match Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .create(&PostParams::default(), &careless)
        .await
    {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403 && status.message.contains("violates PodSecurity \"restricted"),
            "{status:?}"
        ),
        other => panic!("a careless pod must be refused by the restricted profile, got {other:?}"),
    }

    // The chart's operator pods are admitted (and run).
    env.install(false, &[]).await?;
    let events = pod_security_events(client.clone(), OPERATOR_NAMESPACE).await?;
    assert!(events.is_empty(), "{events:?}");

    // Every pod of a JocCluster is admitted: members and API servers.
    let namespace = "js7";
    create_namespace(&env.plane, namespace, true).await?;
    let yaml = "apiVersion: v1
kind: Secret
metadata:
  name: joc-db
stringData:
  url: postgres://u:p@db/x
---
apiVersion: joc-ha.dev/v1alpha1
kind: JocCluster
metadata:
  name: joc
spec:
  members: 2
  apiServers: 1
  image: sosberlin/js7:joc-2-8-1
  database:
    type: postgresql
    secretRef:
      name: joc-db
  logVolume:
    size: 1Gi
";
    // (The log volume's claims stay Pending without a storage provisioner,
    // which the fake kubelet ignores; they are here to prove that the
    // volume, too, is admitted.)
    kubectl_apply(&env.plane, yaml, &["-n", namespace]).await?;
    wait_cluster_ready(client.clone(), namespace, "joc")
        .await
        .with_context(|| env.operator_logs())?;
    let events = pod_security_events(client.clone(), namespace).await?;
    assert!(events.is_empty(), "{events:?}");

    // Admission checks runAsNonRoot is set; a real kubelet must also be able to
    // verify it, which needs a numeric user: the cockpit container names JOC's
    // uid (sosberlin/js7 starts as root otherwise), the sidecar image has a
    // numeric USER (scripts/images.sh: 65532). No exception to the profile is needed.
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}=joc")))
        .await?;
    assert_eq!(pods.items.len(), 3);
    for pod in &pods.items {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let security = container.security_context.clone().unwrap_or_default();
            let user = security.run_as_user.or(pod_user);
            // The sidecar image's numeric USER covers `joc-ha-hook` too.
            let is_sidecar = [
                joc_ha_crds::names::pod::SIDECAR_CONTAINER,
                joc_ha_crds::names::pod::HOOK_INIT_CONTAINER,
            ]
            .contains(&container.name.as_str());
            assert!(
                user.is_some_and(|uid| uid != 0) || is_sidecar,
                "{}/{}: no verifiable non-root user: {security:?}",
                pod.name_any(),
                container.name
            );
        }
    }
    Ok(())
}

// ---- 8. The operator's Secret rights ----

/// The operator reads Secrets and watches them (metadata only, so that a
/// fixed password reconciles at once), and can change none.
#[tokio::test]
async fn operator_token_reads_and_watches_secrets_but_cannot_change_them() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    let account = install_chart_rbac(&plane, RELEASE, OPERATOR_NAMESPACE).await?;
    plane.create_namespace("js7").await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "joc-db"},
        "stringData": {"url": "postgres://u:p@db/x"}
    }))?;
    Api::<Secret>::namespaced(plane.client(), "js7")
        .create(&PostParams::default(), &secret)
        .await?;
    let token = plane
        .token_for(&account.namespace, &account.service_account)
        .await?;
    let operator = plane.client_for_token(&token).await?;
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), "js7");

    // RBAC takes a moment to reach the authorizer's cache: wait for the allowed call.
    let got = wait_for_ok(
        "the operator to get Secret joc-db",
        TIMEOUT,
        POLL,
        || async { secrets.get("joc-db").await.map_err(|e| e.to_string()) },
    )
    .await?;
    assert!(got.data.is_some_and(|d| d.contains_key("url")));
    assert!(
        secrets.get_opt("absent").await?.is_none(),
        "a missing Secret is a 404, not a 403"
    );
    // The operator's Secret watch: metadata of every namespace's Secrets.
    let metadata = Api::<Secret>::all(operator.clone())
        .list_metadata(&ListParams::default())
        .await?;
    assert!(
        metadata
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("joc-db")),
        "the operator lists the Secrets' metadata"
    );

    let changed: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "made-by-the-operator"},
        "stringData": {"x": "y"}
    }))?;
    for (what, result) in [
        (
            "create",
            secrets
                .create(&PostParams::default(), &changed)
                .await
                .map(drop),
        ),
        (
            "patch",
            secrets
                .patch(
                    "joc-db",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"stringData": {"url": "x"}})),
                )
                .await
                .map(drop),
        ),
        (
            "delete",
            secrets
                .delete("joc-db", &kube::api::DeleteParams::default())
                .await
                .map(drop),
        ),
    ] {
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{what}: {status:?}");
                eprintln!("{what}: {} {}", status.code, status.message);
            }
            other => panic!("{what} must be forbidden, got {other:?}"),
        }
    }
    Ok(())
}

// ---- 9. The sidecar admission policies ----

#[tokio::test]
async fn sidecar_admission_policy_allows_only_its_own_role_label() -> anyhow::Result<()> {
    let env = Installed::start(false, &[]).await?;
    let client = env.client();
    let namespace = "js7";
    env.plane.create_namespace(namespace).await?;
    let mut yaml = String::new();
    for name in ["a", "b"] {
        yaml.push_str(&format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: {name}-db
stringData:
  url: postgres://u:p@db/x
---
apiVersion: joc-ha.dev/v1alpha1
kind: JocCluster
metadata:
  name: {name}
spec:
  members: 1
  image: sosberlin/js7:joc-2-8-1
  database:
    type: postgresql
    secretRef:
      name: {name}-db
---
"
        ));
    }
    kubectl_apply(&env.plane, &yaml, &["-n", namespace]).await?;
    for name in ["a", "b"] {
        wait_cluster_ready(client.clone(), namespace, name)
            .await
            .with_context(|| env.operator_logs())?;
    }

    // The sidecar ServiceAccount the operator created for cluster a.
    let token = env.plane.token_for(namespace, "a-joc-ha-sidecar").await?;
    let sidecar = env.plane.client_for_token(&token).await?;
    let pods: Api<Pod> = Api::namespaced(sidecar.clone(), namespace);
    let merge = |body: serde_json::Value| Patch::Merge(body);
    let labels = |labels: serde_json::Value| merge(json!({"metadata": {"labels": labels}}));
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };

    // Policies take effect a moment after they are created; wait (with dry
    // runs, which admission sees like real requests) until one denies.
    let message = wait_for_ok("the pod policy to be in force", TIMEOUT, POLL, || async {
        match pods
            .patch("a-0", &dry_run, &labels(json!({"app": "evil"})))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(status.message),
            Err(e) => Err(e.to_string()),
            Ok(_) => Err("still allowed".to_owned()),
        }
    })
    .await?;
    assert!(
        message.contains("a joc-ha sidecar may change only the joc-ha.dev/role label of a pod"),
        "{message}"
    );

    // Allowed: its own cluster's pod, the role label, as the sidecar writes it
    // (merge patch with the lease-term annotation), and back.
    for role in ["active", "standby"] {
        pods.patch(
            "a-0",
            &PatchParams::default(),
            &merge(json!({"metadata": {
                "labels": {LABEL_ROLE: role},
                "annotations": {"joc-ha.dev/lease-term": "7"},
            }})),
        )
        .await
        .with_context(|| format!("labeling its own pod {role}"))?;
        let pod = Api::<Pod>::namespaced(client.clone(), namespace)
            .get("a-0")
            .await?;
        assert_eq!(pod.labels().get(LABEL_ROLE).map(String::as_str), Some(role));
    }
    // Removing the label is allowed too (a demoted pod routes nowhere).
    pods.patch(
        "a-0",
        &PatchParams::default(),
        &labels(json!({LABEL_ROLE: null})),
    )
    .await
    .context("removing its own pod's role label")?;

    // Denied, with the policy's message.
    let denied: Vec<(&str, &str, Patch<serde_json::Value>, &str)> = vec![
        (
            "another label",
            "a-0",
            labels(json!({"app.kubernetes.io/name": "other"})),
            "may change only the joc-ha.dev/role label of a pod",
        ),
        (
            "a label of its own cluster's pod removed",
            "a-0",
            labels(json!({LABEL_CLUSTER: null})),
            "may change only the joc-ha.dev/role label of a pod",
        ),
        (
            "another annotation",
            "a-0",
            merge(json!({"metadata": {"annotations": {"example.com/x": "y"}}})),
            "may change only joc-ha.dev/* annotations of a pod",
        ),
        (
            "a finalizer",
            "a-0",
            merge(json!({"metadata": {"finalizers": ["example.com/block"]}})),
            "may not change a pod's owner references or finalizers",
        ),
        (
            "a joc-ha.dev annotation of another cluster's pod",
            "b-0",
            merge(json!({"metadata": {"annotations": {"joc-ha.dev/note": "x"}}})),
            "a joc-ha sidecar may change only pods of its own cluster; system:serviceaccount:js7:a-joc-ha-sidecar tried to change pod b-0",
        ),
    ];
    for (what, pod, patch, expected) in denied {
        match pods.patch(pod, &PatchParams::default(), &patch).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{what}: {status:?}");
                assert!(
                    status.message.contains(expected),
                    "{what}: {}",
                    status.message
                );
                eprintln!("{what}: denied: {}", status.message);
            }
            other => panic!("{what} must be denied, got {other:?}"),
        }
    }
    // The role label of another cluster's pod: two policies refuse it (this
    // one and the role-label guard); the API server names whichever it ran
    // first.
    match pods
        .patch(
            "b-0",
            &PatchParams::default(),
            &labels(json!({LABEL_ROLE: "active"})),
        )
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains(
                    "a joc-ha sidecar may change only pods of its own cluster; system:serviceaccount:js7:a-joc-ha-sidecar tried to change pod b-0"
                ) || status.message.contains(
                    "are written only by the joc-ha sidecars of its cluster (they follow the lease); system:serviceaccount:js7:a-joc-ha-sidecar may not change them"
                ),
                "{}",
                status.message
            );
        }
        other => panic!("the role of another cluster's pod must be denied, got {other:?}"),
    }
    let b0 = Api::<Pod>::namespaced(client.clone(), namespace)
        .get("b-0")
        .await?;
    assert_eq!(b0.labels().get(LABEL_ROLE), None, "b-0 must be untouched");

    // Its own JocCluster: only the switch-over annotation.
    let clusters: Api<JocCluster> = Api::namespaced(sidecar.clone(), namespace);
    wait_for_ok(
        "the JocCluster policy to be in force",
        TIMEOUT,
        POLL,
        || async {
            match clusters
                .patch("a", &dry_run, &merge(json!({"spec": {"members": 5}})))
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 403 => Ok(status.message),
                Err(e) => Err(e.to_string()),
                Ok(_) => Err("still allowed".to_owned()),
            }
        },
    )
    .await
    .and_then(|message| {
        if message.contains("may not change a JocCluster's spec") {
            Ok(())
        } else {
            bail!("{message}")
        }
    })?;
    clusters
        .patch(
            "a",
            &PatchParams::default(),
            &merge(json!({"metadata": {"annotations": {"joc-ha.dev/switchover-to": null}}})),
        )
        .await
        .context("removing the switch-over annotation of its own cluster")?;
    match clusters
        .patch(
            "a",
            &PatchParams::default(),
            &merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
    {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403
                && status
                    .message
                    .contains("may change only the joc-ha.dev/switchover-to annotation"),
            "{status:?}"
        ),
        other => panic!("a label on the JocCluster must be denied, got {other:?}"),
    }
    // Cluster b is out of reach already by RBAC (the Role names cluster a only).
    match clusters
        .patch(
            "b",
            &PatchParams::default(),
            &merge(json!({"metadata": {"annotations": {"joc-ha.dev/switchover-to": "any"}}})),
        )
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("patching cluster b must be forbidden, got {other:?}"),
    }

    // Anyone else is not matched by the policies: an admin may relabel.
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch(
            "b-0",
            &PatchParams::default(),
            &labels(json!({"team": "js7"})),
        )
        .await
        .context("an admin relabeling a pod")?;
    Ok(())
}

/// Runs the chart's operator pods from the operator binary and every other
/// pod as the stack does (sidecar and stand-in cockpit processes).
struct OperatorAndClusters {
    operator: ChartOperatorRunner,
    clusters: joc_ha_tests::stack::JocRunner,
}

impl joc_ha_tests::kubelet::ContainerRunner for OperatorAndClusters {
    fn command(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        ctx: &joc_ha_tests::kubelet::PodContext,
    ) -> Option<joc_ha_tests::kubelet::ProcessSpec> {
        if ChartOperatorRunner::is_operator_pod(pod) {
            self.operator.command(pod, container, ctx)
        } else {
            self.clusters.command(pod, container, ctx)
        }
    }

    fn host_port(&self, namespace: &str, pod: &str, container_port: i32) -> Option<u16> {
        self.operator
            .host_port(namespace, pod, container_port)
            .or_else(|| self.clusters.host_port(namespace, pod, container_port))
    }

    fn exec(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        command: &[String],
        ctx: &joc_ha_tests::kubelet::PodContext,
    ) -> Option<joc_ha_tests::kubelet::ProcessSpec> {
        self.clusters.exec(pod, container, command, ctx)
    }
}

/// Points an example's database Secret at a real test database, keeping its
/// shape (a `url`, or host/port/database/user/password).
fn with_test_database(example: &Path, db: &joc_ha_tests::db::TestDb) -> anyhow::Result<String> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(example)?;
    let mut out = String::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut value = serde_yaml::Value::deserialize(document)?;
        if value["kind"] == "Secret" {
            let data = &mut value["stringData"];
            if data.get("url").is_some() {
                data["url"] = db.url().into();
            } else if data.get("host").is_some() {
                // A database Secret by parts (not a license Secret).
                let port = db.server().map(|s| s.port()).context("private server")?;
                data["host"] = "127.0.0.1".into();
                data["port"] = port.to_string().into();
                data["database"] = db.name().into();
                data["user"] = joc_ha_tests::db::TEST_USER.into();
                data["password"] = joc_ha_tests::db::TEST_PASSWORD.into();
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value)?);
    }
    Ok(out)
}

/// The repository's example manifests, sorted.
fn example_files() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut examples: Vec<_> = std::fs::read_dir(examples_dir())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    examples.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    examples.sort();
    Ok(examples)
}

#[tokio::test]
async fn every_example_gets_one_active_endpoint_from_the_installed_chart() -> anyhow::Result<()> {
    let plane = ControlPlane::start().await?;
    let periods = tempfile::tempdir()?;
    let runner = OperatorAndClusters {
        operator: ChartOperatorRunner::new()?,
        clusters: joc_ha_tests::stack::JocRunner::new(None, periods.path().to_path_buf())?,
    };
    let kubelet = FakeKubelet::start(
        plane.client(),
        FakeKubeletConfig::new(&plane).with_runner(runner),
    )
    .await?;
    let env = Installed { kubelet, plane };
    env.install(true, &[]).await?;

    let examples = example_files()?;
    let mut recorders = vec![];
    // Each example is a cluster of its own, with a database of its own: js7
    // clusters refuse to share one (JOC's tables are database-wide).
    let mut databases = vec![];
    for example in &examples {
        let stem = example
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("example without a name")?;
        let namespace = format!("ex-{stem}");
        env.plane.create_namespace(&namespace).await?;
        let (name, _, _) = example_cluster(example)?;
        let backend = if stem.contains("mariadb") {
            joc_ha_tests::db::Backend::MariaDb
        } else {
            joc_ha_tests::db::Backend::Postgres
        };
        let db = joc_ha_tests::db::TestDb::start_private(backend).await?;
        // A Controller is registered, as in any cluster past its first
        // start: without one JOC's active member blocks and writes no
        // heartbeat (docs/joc-facts.md fact 9), and no member gets Ready.
        joc_ha_tests::joc::register_controller(
            &db.url(),
            joc_ha_tests::stack::TEST_CONTROLLER_ID,
            joc_ha_tests::stack::TEST_CONTROLLER_URI,
            joc_ha_tests::joc::SecurityLevel::Low,
        )
        .await?;
        let yaml = with_test_database(example, &db)?;
        databases.push(db);
        let recorder =
            joc_ha_tests::stack::EndpointRecorder::start(env.client(), &namespace, &name);
        kubectl_apply(&env.plane, &yaml, &["-n", &namespace]).await?;
        recorders.push((namespace, name, recorder));
    }
    for (namespace, name, recorder) in &recorders {
        let active = recorder
            .wait_single(None, Duration::from_secs(180))
            .await
            .with_context(|| format!("{namespace}/{name}: {}", env.operator_logs()))?;
        if let Err(error) = wait_cluster_ready(env.client(), namespace, name).await {
            let pods: Api<Pod> = Api::namespaced(env.client(), namespace);
            let mut why = String::new();
            for pod in pods.list(&ListParams::default()).await?.items {
                let pod_name = pod.name_any();
                why.push_str(&format!("\n{pod_name} ready={}", is_ready(&pod)));
                if !is_ready(&pod) {
                    for container in ["joc-ha-sidecar", "joc"] {
                        if let Some(path) =
                            env.kubelet.container_log(namespace, &pod_name, container)
                        {
                            why.push_str(&format!(
                                "\n--- {container}:\n{}",
                                joc_ha_tests::process::log_tail(&path, 15)
                            ));
                        }
                    }
                }
            }
            return Err(error.context(why));
        }
        // The status follows the label at the operator's next reconcile
        // (pods may be Ready before JOC confirms the active member).
        let clusters: Api<JocCluster> = Api::namespaced(env.client(), namespace);
        wait_for(
            &format!("{namespace}/{name}: status.activeMember {active}"),
            TIMEOUT,
            POLL,
            || async {
                let cluster = clusters.get(name).await.ok()?;
                (cluster.status?.active_member.as_deref() == Some(active.as_str())).then_some(())
            },
        )
        .await?;
        eprintln!("example {namespace}/{name}: active member {active}");
    }
    for (namespace, name, recorder) in &recorders {
        assert!(
            recorder.violations().is_empty(),
            "{namespace}/{name}: two pods behind the active Service"
        );
    }
    Ok(())
}
