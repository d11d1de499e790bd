//! The operator on the harness: the built `joc-ha-operator` binary, standing
//! for its image, run either directly as a [`ManagedProcess`] with a
//! kubeconfig for a given token ([`OperatorProcess`]), or by the fake kubelet
//! as the `operator` container of the chart's Deployment ([`ChartOperatorRunner`]).
//! Plus the chart helpers the end-to-end tests share: rendering with the
//! built helm, applying YAML with the built kubectl, the chart's RBAC, the CRD.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use joc_ha_crds::JocCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, CustomResourceExt as _, ResourceExt as _};

use crate::controlplane::ControlPlane;
use crate::kubelet::{ContainerRunner, PodContext, ProcessSpec, Readiness};
use crate::process::{ManagedProcess, describe_exit};
use crate::wait::{http_get_status, wait_for_ok};

/// Overrides where the operator binary is found.
pub const OPERATOR_BIN_ENV: &str = "JOC_HA_OPERATOR_BIN";
const OPERATOR_BIN: &str = "joc-ha-operator";
const NOT_BUILT: &str = "build it first: `cargo build -p joc-ha-operator` (`make test` builds every binary before the tests)";
/// Name of the operator's container in the chart's Deployment.
pub const CHART_OPERATOR_CONTAINER: &str = "operator";
/// `app.kubernetes.io/name` of the chart's operator pods.
pub const CHART_OPERATOR_APP: &str = "joc-ha-operator";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_LINES_ON_FAILURE: usize = 40;

/// The workspace root (the tests crate's parent).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `charts/joc-ha`.
pub fn chart_dir() -> PathBuf {
    workspace_dir().join("charts/joc-ha")
}

/// `examples/`.
pub fn examples_dir() -> PathBuf {
    workspace_dir().join("examples")
}

/// The built `joc-ha-operator`: `$JOC_HA_OPERATOR_BIN`, else next to the
/// running test executable (`<target>/<profile>/deps/<test>` →
/// `<target>/<profile>/joc-ha-operator`). `env!("CARGO_BIN_EXE_...")` only
/// exists for binaries of the test's own package, and cargo builds no other
/// package's binaries for `cargo test -p joc-ha-tests`; so this fails with a
/// clear message when the binary is missing or older than its sources.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(OPERATOR_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{OPERATOR_BIN_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let path = crate::stack::workspace_binary(OPERATOR_BIN)?;
    let built = modified(&path)?;
    let root = workspace_dir();
    for source in [
        "operator/src",
        "operator/Cargo.toml",
        "crds/src",
        "crds/Cargo.toml",
    ] {
        if let Some((newer, when)) = newest_file(&root.join(source))?
            && when > built
        {
            bail!(
                "{} is older than {}: {NOT_BUILT}",
                path.display(),
                newer.display()
            );
        }
    }
    Ok(path)
}

fn modified(path: &Path) -> anyhow::Result<SystemTime> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the mtime of {}", path.display()))
}

/// The most recently modified file at or below `path`.
fn newest_file(path: &Path) -> anyhow::Result<Option<(PathBuf, SystemTime)>> {
    if !path.exists() {
        return Ok(None);
    }
    if path.is_file() {
        return Ok(Some((path.to_path_buf(), modified(path)?)));
    }
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        if let Some((file, when)) = newest_file(&entry?.path())?
            && newest.as_ref().is_none_or(|(_, best)| when > *best)
        {
            newest = Some((file, when));
        }
    }
    Ok(newest)
}

/// How to run one operator process.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Identity in the leader election (`POD_NAME`).
    pub identity: String,
    /// Namespace of the leader-election Lease (`POD_NAMESPACE`).
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    pub sidecar_image: String,
    /// `plain` or `json`.
    pub log_format: String,
    /// `RUST_LOG` of the operator.
    pub rust_log: String,
}

impl OperatorOptions {
    /// Leader election in `lease_namespace` with the chart's Lease name.
    pub fn new(identity: impl Into<String>, lease_namespace: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_namespace: lease_namespace.into(),
            lease_name: CHART_OPERATOR_APP.to_owned(),
            sidecar_image: "ghcr.io/joc-ha/joc-ha-sidecar:test".to_owned(),
            log_format: "plain".to_owned(),
            rust_log: "info,kube=warn".to_owned(),
        }
    }

    pub fn lease_name(mut self, name: impl Into<String>) -> Self {
        self.lease_name = name.into();
        self
    }
}

/// A `joc-ha-operator` process talking to the control plane with the rights of
/// one kubeconfig. Killed on drop.
#[derive(Debug)]
pub struct OperatorProcess {
    process: ManagedProcess,
    http_addr: SocketAddr,
    options: OperatorOptions,
}

impl OperatorProcess {
    /// Starts the operator with a kubeconfig for `token` (no admin rights) and
    /// waits until its HTTP endpoint answers.
    pub async fn start_with_token(
        plane: &ControlPlane,
        token: &str,
        options: OperatorOptions,
    ) -> anyhow::Result<Self> {
        let kubeconfig = plane.kubeconfig_for_token(token)?;
        Self::start(plane, &kubeconfig, options).await
    }

    /// Starts the operator with `kubeconfig` and waits until its HTTP
    /// endpoint answers. Its log is `<plane dir>/logs/operator-<identity>.log`.
    pub async fn start(
        plane: &ControlPlane,
        kubeconfig: &Path,
        options: OperatorOptions,
    ) -> anyhow::Result<Self> {
        let binary = operator_binary()?;
        let port = crate::db::free_port()?;
        let http_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = std::process::Command::new(&binary);
        // A clean environment: nothing of the test's (an in-cluster
        // KUBERNETES_SERVICE_HOST, a developer's KUBECONFIG) leaks in.
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", plane.dir().join("home"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", &options.identity)
            .env("POD_NAMESPACE", &options.lease_namespace)
            .env("JOC_HA_LEADER_LEASE", &options.lease_name)
            .env("JOC_HA_SIDECAR_IMAGE", &options.sidecar_image)
            .env("JOC_HA_HTTP_ADDR", http_addr.to_string())
            .env("JOC_HA_LOG_FORMAT", &options.log_format)
            .env("RUST_LOG", &options.rust_log)
            .env("RUST_BACKTRACE", "1");
        let log = plane
            .log_dir()
            .join(format!("operator-{}.log", options.identity));
        let process = ManagedProcess::spawn(command, &log)?;
        let operator = Self {
            process,
            http_addr,
            options,
        };
        operator.wait_healthy().await?;
        Ok(operator)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let url = format!("http://{}/healthz", self.http_addr);
        let exited = wait_for_ok(
            &format!("operator {} to answer {url}", self.options.identity),
            STARTUP_TIMEOUT,
            Duration::from_millis(100),
            || async {
                if let Some(status) = self.process.exit_status() {
                    return Ok(Some(status));
                }
                match http_get_status(&url, Duration::from_secs(1)).await {
                    Ok(200) => Ok(None),
                    Ok(status) => Err(format!("HTTP {status}")),
                    Err(error) => Err(format!("{error:#}")),
                }
            },
        )
        .await
        .with_context(|| self.describe())?;
        if let Some(status) = exited {
            bail!(
                "operator {} exited ({}) before answering; {}",
                self.options.identity,
                describe_exit(status),
                self.describe()
            );
        }
        Ok(())
    }

    pub fn identity(&self) -> &str {
        &self.options.identity
    }

    pub fn options(&self) -> &OperatorOptions {
        &self.options
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The whole log (for assertions on what it says and never says).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// Its log path and last lines, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "operator log {}:\n{}",
            self.process.log_path().display(),
            self.process.log_tail(LOG_LINES_ON_FAILURE)
        )
    }

    /// `joc_ha_operator_leader` from its /metrics: whether it reconciles.
    pub async fn is_leading(&self) -> anyhow::Result<bool> {
        let metrics = http_get_body(&format!("http://{}/metrics", self.http_addr)).await?;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("joc_ha_operator_leader "))
            .map(|value| value.trim() == "1")
            .with_context(|| format!("no joc_ha_operator_leader in /metrics: {metrics}"))
    }

    /// Fails with the log tail if the process has exited.
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        match self.process.exit_status() {
            None => Ok(()),
            Some(status) => bail!(
                "operator {} exited ({}); {}",
                self.options.identity,
                describe_exit(status),
                self.describe()
            ),
        }
    }
}

/// Body of a plain-HTTP GET on loopback (small responses only).
pub async fn http_get_body(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not a plain http url: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {url}: no answer within 5 s"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {url}: malformed response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {url}: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Plays the chart's operator pods: for the `operator` container of a pod
/// labeled `app.kubernetes.io/name=joc-ha-operator` it runs the built binary
/// with the container's env as rendered by the chart (lease name, sidecar
/// image, log format, POD_NAME/POD_NAMESPACE from the downward API) and the
/// pod's own ServiceAccount token; only the listen address is moved to a free
/// loopback port, since every "pod" shares the host's network. Readiness is
/// the chart's probe path, /readyz. Every other container gets no process
/// (running and Ready as far as Kubernetes can tell).
#[derive(Debug)]
pub struct ChartOperatorRunner {
    binary: PathBuf,
    ports: Mutex<HashMap<(String, String), u16>>,
}

impl ChartOperatorRunner {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            binary: operator_binary()?,
            ports: Mutex::new(HashMap::new()),
        })
    }

    fn port(&self, namespace: &str, pod: &str) -> Option<u16> {
        let mut ports = self.ports.lock().ok()?;
        let key = (namespace.to_owned(), pod.to_owned());
        if let Some(port) = ports.get(&key) {
            return Some(*port);
        }
        let port = crate::db::free_port().ok()?;
        ports.insert(key, port);
        Some(port)
    }

    /// Whether `pod` is one of the chart's operator pods.
    pub fn is_operator_pod(pod: &Pod) -> bool {
        pod.labels()
            .get("app.kubernetes.io/name")
            .map(String::as_str)
            == Some(CHART_OPERATOR_APP)
    }
}

impl ContainerRunner for ChartOperatorRunner {
    fn command(&self, pod: &Pod, container: &Container, ctx: &PodContext) -> Option<ProcessSpec> {
        if !Self::is_operator_pod(pod) || container.name != CHART_OPERATOR_CONTAINER {
            return None;
        }
        let kubeconfig = ctx.kubeconfig_path.as_ref()?;
        let port = self.port(&ctx.namespace, &ctx.pod_name)?;
        Some(
            ProcessSpec::new(&self.binary)
                .env("KUBECONFIG", kubeconfig.to_string_lossy().into_owned())
                .env("JOC_HA_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "info,kube=warn")
                .readiness(Readiness::HttpGet(format!(
                    "http://127.0.0.1:{port}/readyz"
                ))),
        )
    }

    fn host_port(&self, namespace: &str, pod: &str, container_port: i32) -> Option<u16> {
        // The chart's operator listens on 8080 in its pod.
        (container_port == 8080)
            .then(|| {
                self.ports
                    .lock()
                    .ok()?
                    .get(&(namespace.to_owned(), pod.to_owned()))
                    .copied()
            })
            .flatten()
    }
}

/// Creates the JocCluster CRD (from the Rust types) and waits until it is
/// Established.
pub async fn install_crd(plane: &ControlPlane) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client());
    let crd = JocCluster::crd();
    let name = crd.name_any();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error).context("creating the JocCluster CRD"),
    }
    wait_crd_established(plane.client(), &name).await
}

/// Waits until the CRD `name` is Established.
pub async fn wait_crd_established(client: Client, name: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    wait_for_ok(
        &format!("CRD {name} Established"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let crd = crds.get(name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err("not Established yet".to_owned())
            }
        },
    )
    .await
}

/// Output of a tool, failing with its stderr unless it succeeded.
pub fn succeeded(what: &str, output: std::process::Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\nstderr: {}\nstdout: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `helm template RELEASE charts/joc-ha --namespace NAMESPACE
/// --kube-version <the plane's> ARGS...`. Without `--kube-version` helm
/// renders for v1.20, which the chart's `kubeVersion` refuses.
pub async fn helm_template(
    plane: &ControlPlane,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let version = plane
        .client()
        .apiserver_version()
        .await
        .context("asking the API server for its version")?
        .git_version;
    let mut all = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--kube-version",
        &version,
    ];
    all.extend_from_slice(args);
    let output = plane.helm(&all).await?;
    succeeded(&format!("helm {}", all.join(" ")), output)
}

static YAML_FILES: AtomicU32 = AtomicU32::new(0);

/// Writes `yaml` into the plane's dir (the harness's tools read no stdin) and
/// returns the path, for `kubectl ... -f PATH`.
pub fn write_yaml(plane: &ControlPlane, yaml: &str) -> anyhow::Result<PathBuf> {
    let n = YAML_FILES.fetch_add(1, Ordering::Relaxed);
    let path = plane.dir().join(format!("manifest-{n}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `kubectl apply -f` of `yaml` as admin, plus `args`; fails with stderr.
pub async fn kubectl_apply(
    plane: &ControlPlane,
    yaml: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let path = write_yaml(plane, yaml)?;
    let path = path.to_string_lossy();
    let mut all = vec!["apply", "-f", &path];
    all.extend_from_slice(args);
    let output = plane.kubectl(&all).await?;
    succeeded(&format!("kubectl {}", all.join(" ")), output)
}

/// The operator's identity as the chart defines it.
#[derive(Debug, Clone)]
pub struct ChartOperatorAccount {
    pub namespace: String,
    /// The ServiceAccount, also the name of the ClusterRole, its binding and
    /// the leader-election Lease.
    pub service_account: String,
}

/// The chart's full name of the operator for a release.
pub fn chart_fullname(release: &str) -> String {
    format!("{release}-operator")
}

/// Renders the chart's ServiceAccount, ClusterRole, ClusterRoleBinding and
/// leader-election Role/RoleBinding (exactly the rights the operator's image
/// runs with) and applies them; creates `namespace` first. The rest of the
/// chart (Deployment, policy) is left out.
/// The operator process running as the chart's least-privilege
/// ServiceAccount (release `joc-ha` in `joc-ha-system`), as its image would.
pub async fn start_with_chart_account(plane: &ControlPlane) -> anyhow::Result<OperatorProcess> {
    let account = install_chart_rbac(plane, "joc-ha", "joc-ha-system").await?;
    let token = plane
        .token_for(&account.namespace, &account.service_account)
        .await?;
    OperatorProcess::start_with_token(
        plane,
        &token,
        OperatorOptions::new("joc-ha-operator-0", &account.namespace)
            .lease_name(account.service_account.clone()),
    )
    .await
}

pub async fn install_chart_rbac(
    plane: &ControlPlane,
    release: &str,
    namespace: &str,
) -> anyhow::Result<ChartOperatorAccount> {
    plane.create_namespace(namespace).await?;
    let yaml = helm_template(
        plane,
        release,
        namespace,
        &[
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/clusterrole.yaml",
            "--show-only",
            "templates/clusterrolebinding.yaml",
            "--show-only",
            "templates/leader-election.yaml",
        ],
    )
    .await?;
    kubectl_apply(plane, &yaml, &[]).await?;
    Ok(ChartOperatorAccount {
        namespace: namespace.to_owned(),
        service_account: chart_fullname(release),
    })
}

/// The holder of a leader-election Lease, if any.
pub async fn lease_holder(
    client: Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
        .filter(|holder| !holder.is_empty()))
}
