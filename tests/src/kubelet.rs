//! A fake kubelet for one Node. No container runtime: it binds pending pods to
//! its Node (no scheduler runs), reports them Running/Ready with a documentation
//! IP (192.0.2.0/24, never contacted), and can run one local process per
//! container through a [`ContainerRunner`], with kubelet-like env resolution,
//! emptyDir/configMap/secret volumes as host dirs, a service-account token bound
//! to the pod, restarts with back-off, readiness probes, liveness and startup
//! probes from the pod spec (a failing one kills the process) and graceful deletion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, KeyToPath, Node, NodeAddress, NodeCondition,
    NodeStatus, NodeSystemInfo, ObjectReference, Pod, PodCondition, PodIP, PodStatus, Secret,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::controlplane::ControlPlane;
use crate::process::{ManagedProcess, describe_exit, log_tail};
use crate::wait::http_get_status;

/// The Node's address; pods get 192.0.2.10–250. Documentation range: data only.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const FIRST_POD_IP: u8 = 10;
const LAST_POD_IP: u8 = 250;
const TICK: Duration = Duration::from_millis(200);
const PROBE_PERIOD: Duration = Duration::from_millis(500);
const LEASE_RENEW_PERIOD: Duration = Duration::from_secs(10);
const NODE_STATUS_PERIOD: Duration = Duration::from_secs(60);
const LEASE_DURATION_SECONDS: i32 = 40;
const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIG_RETRY: Duration = Duration::from_secs(1);
const DEFAULT_GRACE_SECONDS: i64 = 30;
const TOKEN_SECONDS: i64 = 24 * 3600;
const FIELD_MANAGER: &str = "joc-ha-fake-kubelet";
/// Taints the node-lifecycle controller sets on a node it thinks is down.
const NODE_DOWN_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Decides which local process, if any, plays a container.
pub trait ContainerRunner: Send + Sync {
    /// `None`: no process; the container counts as running and ready.
    fn command(&self, pod: &Pod, container: &Container, ctx: &PodContext) -> Option<ProcessSpec>;

    /// The loopback port where a pod's container port is served, for
    /// lifecycle hooks (`preStop.httpGet`); `None`: the hook is skipped.
    fn host_port(&self, _namespace: &str, _pod: &str, _container_port: i32) -> Option<u16> {
        None
    }

    /// The process that plays `command` of a container's `exec` lifecycle
    /// hook (preStop), as if run in that container; `None`: the hook is
    /// skipped (and logged). The kubelet applies the container's resolved
    /// env. By default: the program's path mapped through the container's
    /// mounts ([`exec_in_mounts`]), so that the hook runs what the pod's own
    /// volumes hold, as in a real container.
    fn exec(
        &self,
        _pod: &Pod,
        _container: &Container,
        command: &[String],
        ctx: &PodContext,
    ) -> Option<ProcessSpec> {
        exec_in_mounts(command, ctx)
    }

    /// Whether the kubelet runs this container's liveness and startup probes
    /// from the pod spec (killing the process when one fails). Off unless the
    /// runner opts in, so that runners written before probes were enforced
    /// keep their behaviour.
    fn enforce_liveness(&self, _pod: &Pod, _container: &Container) -> bool {
        false
    }
}

impl<F> ContainerRunner for F
where
    F: Fn(&Pod, &Container, &PodContext) -> Option<ProcessSpec> + Send + Sync,
{
    fn command(&self, pod: &Pod, container: &Container, ctx: &PodContext) -> Option<ProcessSpec> {
        self(pod, container, ctx)
    }
}

/// What the fake kubelet prepared for one container of a pod.
#[derive(Debug, Clone)]
pub struct PodContext {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    pub pod_ip: String,
    /// Private to this pod; shared by its containers.
    pub pod_dir: PathBuf,
    /// The container's env as a kubelet would resolve it, in order (`envFrom`,
    /// then `env`, `$(VAR)` expanded). Always applied to the process.
    pub env: Vec<(String, String)>,
    /// Host dir of each pod volume (emptyDir, configMap and secret contents,
    /// projected service-account volumes), by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    /// This container's mounts: mountPath -> host dir (subPath applied).
    pub mounts: BTreeMap<String, PathBuf>,
    /// Like /var/run/secrets/kubernetes.io/serviceaccount: `token`, `namespace`,
    /// `ca.crt` (when known) and `kubeconfig` (when the API server URL is known).
    pub service_account_dir: PathBuf,
    /// A token of the pod's ServiceAccount, bound to the pod: the process has that
    /// account's rights and nothing more.
    pub token_path: PathBuf,
    /// A kubeconfig that reads `token_path` (set when the kubelet was configured
    /// with the API server URL and CA, as [`FakeKubeletConfig::new`] does).
    pub kubeconfig_path: Option<PathBuf>,
}

impl PodContext {
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn volume(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(PathBuf::as_path)
    }

    pub fn mount(&self, mount_path: &str) -> Option<&Path> {
        self.mounts.get(mount_path).map(PathBuf::as_path)
    }
}

/// `command` (an `exec` hook's) with its program's path turned into the
/// host file one of the container's mounts holds; `None` when no mount
/// holds it (a program of the image itself, which no process here plays).
pub fn exec_in_mounts(command: &[String], ctx: &PodContext) -> Option<ProcessSpec> {
    let (program, args) = command.split_first()?;
    // The deepest mount holding the path wins, as in a container.
    let (_, host) = ctx
        .mounts
        .iter()
        .filter_map(|(mount, host)| {
            let rest = program.strip_prefix(mount.as_str())?;
            let rest = rest.strip_prefix('/')?;
            Some((mount.len(), host.join(rest)))
        })
        .max_by_key(|(depth, _)| *depth)?;
    Some(ProcessSpec::new(host).args(args.iter().cloned()))
}

/// A process playing a container. It starts with a clean environment: `PATH`,
/// `HOME` and `TMPDIR` (inside the pod dir), `RUST_LOG`/`RUST_BACKTRACE` if set in
/// the test, the container's resolved env, then `env` here.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Defaults to the pod dir.
    pub cwd: Option<PathBuf>,
    /// Without it a running process is ready.
    pub readiness: Option<Readiness>,
}

impl ProcessSpec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            ..Default::default()
        }
    }

    /// `/bin/sh -c script`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new("/bin/sh").args(["-c".to_owned(), script.into()])
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }
}

/// A readiness probe, polled every 500 ms while the process runs.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// Plain-HTTP GET on loopback (`http://127.0.0.1:PORT/path`); 200–399 is ready.
    HttpGet(String),
    /// Ready when a TCP connection succeeds.
    TcpConnect(SocketAddr),
}

impl Readiness {
    async fn check(&self) -> bool {
        match self {
            Self::HttpGet(url) => {
                matches!(http_get_status(url, Duration::from_secs(1)).await, Ok(status) if (200..400).contains(&status))
            }
            Self::TcpConnect(address) => {
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(address)
                    )
                    .await,
                    Ok(Ok(_))
                )
            }
        }
    }
}

#[derive(Clone)]
pub struct FakeKubeletConfig {
    pub node_name: String,
    /// Pause before a container whose process exited is started again.
    pub restart_backoff: Duration,
    pub runner: Option<Arc<dyn ContainerRunner>>,
    /// For the per-pod kubeconfig and `ca.crt`.
    pub api_server_url: Option<String>,
    pub ca_cert_path: Option<PathBuf>,
}

impl std::fmt::Debug for FakeKubeletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubeletConfig")
            .field("node_name", &self.node_name)
            .field("restart_backoff", &self.restart_backoff)
            .field("runner", &self.runner.is_some())
            .field("api_server_url", &self.api_server_url)
            .finish_non_exhaustive()
    }
}

impl FakeKubeletConfig {
    /// Node `joc-ha-node`, 1 s restart back-off, no processes, pods get a
    /// kubeconfig for `plane`.
    pub fn new(plane: &ControlPlane) -> Self {
        Self {
            node_name: "joc-ha-node".to_owned(),
            restart_backoff: Duration::from_secs(1),
            runner: None,
            api_server_url: Some(plane.api_server_url()),
            ca_cert_path: Some(plane.ca_cert_path()),
        }
    }

    pub fn with_runner(mut self, runner: impl ContainerRunner + 'static) -> Self {
        self.runner = Some(Arc::new(runner));
        self
    }

    pub fn with_restart_backoff(mut self, backoff: Duration) -> Self {
        self.restart_backoff = backoff;
        self
    }

    pub fn with_node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }
}

type ContainerKey = (String, String, String);

/// Plays kubelet for one Node until dropped; dropping kills every container process.
pub struct FakeKubelet {
    shared: Arc<Shared>,
    dir: Option<TempDir>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("node_name", &self.shared.node_name)
            .field("dir", &self.shared.root)
            .finish_non_exhaustive()
    }
}

impl FakeKubelet {
    /// Registers the Node (Ready), starts heartbeats and the pod loop, and returns
    /// once the first list of pods has been handled.
    pub async fn start(client: Client, config: FakeKubeletConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("joc-ha-kubelet-")
            .tempdir()
            .context("creating kubelet dir")?;
        let event_log =
            File::create(dir.path().join("kubelet.log")).context("creating kubelet.log")?;
        let shared = Arc::new(Shared {
            client,
            node_name: config.node_name,
            restart_backoff: config.restart_backoff,
            runner: config.runner,
            api_server_url: config.api_server_url,
            ca_cert_path: config.ca_cert_path,
            root: dir.path().to_path_buf(),
            ips: Mutex::new(IpPool::default()),
            processes: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashSet::new()),
            pod_dirs: Mutex::new(HashMap::new()),
            binding: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            event_log: Mutex::new(event_log),
        });
        let kubelet = Self {
            shared: Arc::clone(&shared),
            dir: Some(dir),
        };

        shared.register_node().await?;
        shared.renew_lease().await?;
        let heartbeat = tokio::spawn(Arc::clone(&shared).heartbeat_loop());
        shared.track(heartbeat.abort_handle());

        let (listed_tx, mut listed_rx) = watch::channel(false);
        let pods = tokio::spawn(Arc::clone(&shared).pod_loop(listed_tx));
        shared.track(pods.abort_handle());
        tokio::time::timeout(
            Duration::from_secs(60),
            listed_rx.wait_for(|listed| *listed),
        )
        .await
        .context("the fake kubelet's first pod list did not finish within 60 s")?
        .context("the fake kubelet's pod loop ended")?;
        shared.log(format!(
            "node {} ready, dir {}",
            shared.node_name,
            shared.root.display()
        ));
        Ok(kubelet)
    }

    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    /// Holds pod dirs (volumes, tokens, process logs) and `kubelet.log`.
    pub fn dir(&self) -> &Path {
        &self.shared.root
    }

    /// The process currently playing a container, to signal it (SIGKILL, SIGSTOP,
    /// SIGCONT, SIGTERM). The kubelet notices exits and restarts the container.
    pub fn process(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<Arc<ManagedProcess>> {
        lock(&self.shared.processes)
            .get(&key(namespace, pod, container))
            .cloned()
    }

    /// Until [`allow_starts`](Self::allow_starts), the container's process is not
    /// started again after it exits (nor first started in a new pod of that name):
    /// the container stays not ready, like a crash-looping one.
    pub fn block_starts(&self, namespace: &str, pod: &str, container: &str) {
        lock(&self.shared.blocked).insert(key(namespace, pod, container));
    }

    pub fn allow_starts(&self, namespace: &str, pod: &str, container: &str) {
        lock(&self.shared.blocked).remove(&key(namespace, pod, container));
    }

    /// The dir of the newest pod with this name on this node.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        lock(&self.shared.pod_dirs)
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
    }

    /// Log file of a container's processes (all restarts appended).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        self.pod_dir(namespace, pod)
            .map(|dir| dir.join("logs").join(format!("{container}.log")))
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
        let processes: Vec<_> = lock(&self.shared.processes)
            .drain()
            .map(|(_, process)| process)
            .collect();
        for process in &processes {
            let _ = process.signal(nix::sys::signal::Signal::SIGKILL);
        }
        // Reaped before the pod dirs go, so no process writes into a removed dir.
        let deadline = Instant::now() + Duration::from_secs(5);
        while processes.iter().any(|process| process.is_running()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if (std::thread::panicking() || std::env::var_os("JOC_HA_KEEP_TMP").is_some())
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!(
                "joc-ha-tests: fake kubelet dir kept at {} (pod dirs hold process logs); last lines of kubelet.log:\n{}",
                path.display(),
                log_tail(&path.join("kubelet.log"), 40)
            );
        }
    }
}

fn key(namespace: &str, pod: &str, container: &str) -> ContainerKey {
    (namespace.to_owned(), pod.to_owned(), container.to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now() -> Time {
    Time(Timestamp::now())
}

struct Shared {
    client: Client,
    node_name: String,
    restart_backoff: Duration,
    runner: Option<Arc<dyn ContainerRunner>>,
    api_server_url: Option<String>,
    ca_cert_path: Option<PathBuf>,
    root: PathBuf,
    ips: Mutex<IpPool>,
    processes: Mutex<HashMap<ContainerKey, Arc<ManagedProcess>>>,
    blocked: Mutex<HashSet<ContainerKey>>,
    pod_dirs: Mutex<HashMap<(String, String), PathBuf>>,
    /// Pod uids with a binding request in flight.
    binding: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<AbortHandle>>,
    event_log: Mutex<File>,
}

impl Shared {
    fn track(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// One line in `kubelet.log` (printed when a test panics) and a tracing event.
    fn log(&self, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::debug!(target: "fake_kubelet", "{message}");
        let _ = writeln!(lock(&self.event_log), "{} {message}", Timestamp::now());
    }

    // ---- Node ----

    async fn register_node(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes.get_opt(&self.node_name).await?.is_none() {
            let labels = [
                ("kubernetes.io/hostname", self.node_name.as_str()),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", "amd64"),
            ];
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(self.node_name.clone()),
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error).context("creating the Node"),
            }
        }
        self.report_node_status().await
    }

    async fn report_node_status(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = now();
        let condition = |type_: &str, status: &str, reason: &str| NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some("fake kubelet".to_owned()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        };
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", "64"),
            ("memory", "256Gi"),
            ("pods", "250"),
            ("ephemeral-storage", "1Ti"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
        .collect();
        let status = NodeStatus {
            conditions: Some(vec![
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: NODE_IP.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: self.node_name.clone(),
                },
            ]),
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".to_owned(),
                boot_id: "joc-ha-fake".to_owned(),
                container_runtime_version: "fake://0".to_owned(),
                kernel_version: "fake".to_owned(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.37.2".to_owned(),
                machine_id: "joc-ha-fake".to_owned(),
                operating_system: "linux".to_owned(),
                os_image: "joc-ha fake kubelet".to_owned(),
                system_uuid: "joc-ha-fake".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        nodes
            .patch_status(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .context("reporting Node status")?;
        // The node-lifecycle controller taints a node it believed down; pods must not be evicted.
        if let Some(node) = nodes.get_opt(&self.node_name).await?
            && let Some(taints) = node.spec.and_then(|spec| spec.taints)
            && taints
                .iter()
                .any(|taint| NODE_DOWN_TAINTS.contains(&taint.key.as_str()))
        {
            let kept: Vec<_> = taints
                .into_iter()
                .filter(|taint| !NODE_DOWN_TAINTS.contains(&taint.key.as_str()))
                .collect();
            nodes
                .patch(
                    &self.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "taints": kept } })),
                )
                .await
                .context("removing node-down taints")?;
        }
        Ok(())
    }

    async fn renew_lease(&self) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.node_name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        leases
            .patch(
                &self.node_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .context("renewing the node Lease")?;
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut last_status = Instant::now();
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(LEASE_RENEW_PERIOD).await;
            let mut result = bounded(self.renew_lease()).await;
            if result.is_ok() && last_status.elapsed() >= NODE_STATUS_PERIOD {
                result = bounded(self.register_node()).await;
                if result.is_ok() {
                    last_status = Instant::now();
                }
            }
            match result {
                Ok(()) => last_error.clear(),
                Err(error) => {
                    let error = format!("{error:#}");
                    if error != last_error {
                        self.log(format!("heartbeat failed (retrying): {error}"));
                        last_error = error;
                    }
                }
            }
        }
    }

    // ---- Pods ----

    async fn pod_loop(self: Arc<Self>, listed: watch::Sender<bool>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = watcher(pods).boxed();
        let mut workers: HashMap<String, PodWorkerHandle> = HashMap::new();
        let mut relisted: Option<HashSet<String>> = None;
        let mut last_error = String::new();
        while let Some(event) = events.next().await {
            match event {
                Err(error) => {
                    // The watcher retries with back-off (API server restarts land here).
                    let error = error.to_string();
                    if error != last_error {
                        self.log(format!("pod watch error (retrying): {error}"));
                        last_error = error;
                    }
                }
                Ok(Event::Init) => relisted = Some(HashSet::new()),
                Ok(Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.on_pod(pod, &mut workers);
                }
                Ok(Event::InitDone) => {
                    last_error.clear();
                    // Pods deleted while the watch was down.
                    if let Some(seen) = relisted.take() {
                        let vanished: Vec<String> = workers
                            .keys()
                            .filter(|uid| !seen.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in vanished {
                            if let Some(worker) = workers.remove(&uid) {
                                worker.gone();
                            }
                        }
                    }
                    listed.send_replace(true);
                }
                Ok(Event::Apply(pod)) => self.on_pod(pod, &mut workers),
                Ok(Event::Delete(pod)) => {
                    if let Some(worker) = pod
                        .metadata
                        .uid
                        .as_ref()
                        .and_then(|uid| workers.remove(uid))
                    {
                        worker.gone();
                    }
                }
            }
        }
        self.log("pod watch ended");
    }

    fn on_pod(self: &Arc<Self>, pod: Pod, workers: &mut HashMap<String, PodWorkerHandle>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        match spec.node_name.as_deref() {
            None => {
                let gated = spec
                    .scheduling_gates
                    .as_ref()
                    .is_some_and(|gates| !gates.is_empty());
                if !gated
                    && pod.metadata.deletion_timestamp.is_none()
                    && lock(&self.binding).insert(uid.clone())
                {
                    let task = tokio::spawn(Arc::clone(self).bind(pod, uid));
                    self.track(task.abort_handle());
                }
            }
            Some(node) if node == self.node_name => match workers.get(&uid) {
                Some(worker) => worker.update(pod),
                None => {
                    let worker = PodWorker::spawn(Arc::clone(self), pod);
                    workers.insert(uid, worker);
                }
            },
            Some(_) => {}
        }
    }

    async fn bind(self: Arc<Self>, pod: Pod, uid: String) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(self.node_name.clone()),
                ..Default::default()
            },
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match pods
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => {
                    self.log(format!("bound {namespace}/{name}"));
                    break;
                }
                // Already bound, or gone, or replaced by a pod of the same name.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => break,
                Err(error) => {
                    self.log(format!(
                        "binding {namespace}/{name} failed (retrying): {error}"
                    ));
                    if Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        lock(&self.binding).remove(&uid);
    }

    fn register_process(&self, key: ContainerKey, process: Arc<ManagedProcess>) {
        lock(&self.processes).insert(key, process);
    }

    fn unregister_process(&self, key: &ContainerKey, process: &Arc<ManagedProcess>) {
        let mut processes = lock(&self.processes);
        // A newer pod of the same name may have registered its own process since.
        if processes
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, process))
        {
            processes.remove(key);
        }
    }

    fn is_blocked(&self, key: &ContainerKey) -> bool {
        lock(&self.blocked).contains(key)
    }
}

fn watcher(
    pods: Api<Pod>,
) -> impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>> + Send {
    watcher::watcher(pods, watcher::Config::default()).default_backoff()
}

#[derive(Default)]
struct IpPool {
    by_pod: HashMap<String, Ipv4Addr>,
    next: u8,
}

impl IpPool {
    /// Keeps the IP a pod already shows (a restarted kubelet), else the next free
    /// one round-robin, so a just-released IP is not handed out again at once.
    fn allocate(&mut self, uid: &str, current: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_pod.get(uid) {
            return Some(*ip);
        }
        let in_use: HashSet<Ipv4Addr> = self.by_pod.values().copied().collect();
        let candidate = current.filter(|ip| {
            let [a, b, c, d] = ip.octets();
            [a, b, c] == [192, 0, 2]
                && (FIRST_POD_IP..=LAST_POD_IP).contains(&d)
                && !in_use.contains(ip)
        });
        let ip = candidate.or_else(|| {
            let span = u16::from(LAST_POD_IP - FIRST_POD_IP) + 1;
            (0..span).find_map(|offset| {
                let d = u16::from(FIRST_POD_IP) + (u16::from(self.next) + offset) % span;
                let ip = Ipv4Addr::new(192, 0, 2, u8::try_from(d).ok()?);
                (!in_use.contains(&ip)).then_some(ip)
            })
        })?;
        self.next = ip.octets()[3].wrapping_sub(FIRST_POD_IP).wrapping_add(1)
            % (LAST_POD_IP - FIRST_POD_IP + 1);
        self.by_pod.insert(uid.to_owned(), ip);
        Some(ip)
    }

    fn release(&mut self, uid: &str) {
        self.by_pod.remove(uid);
    }
}

/// The watch loop's side of a pod worker.
struct PodWorkerHandle {
    updates: watch::Sender<Option<Pod>>,
}

impl PodWorkerHandle {
    fn update(&self, pod: Pod) {
        self.updates.send_replace(Some(pod));
    }

    fn gone(&self) {
        self.updates.send_replace(None);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Regular init container: runs to completion before the next.
    Init,
    /// Init container with `restartPolicy: Always` (native sidecar).
    Sidecar,
    Main,
}

enum SlotState {
    Waiting {
        reason: String,
        message: Option<String>,
        not_before: Option<Instant>,
    },
    Running {
        process: Option<Arc<ManagedProcess>>,
        started_at: Time,
        container_id: String,
        probe: Option<ProbeTask>,
        /// The pod spec's liveness (and startup) probe, running while held;
        /// kills the process on failure.
        _liveness: Option<AbortOnDrop>,
    },
    /// Done and not restarted (completed init container, or restart policy says so).
    Terminated(ContainerStateTerminated),
}

struct ProbeTask {
    ready: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Slot {
    container: Container,
    kind: Kind,
    state: SlotState,
    restart_count: i32,
    has_run: bool,
    starts: u32,
    last_terminated: Option<ContainerStateTerminated>,
}

impl Slot {
    fn is_running(&self) -> bool {
        matches!(self.state, SlotState::Running { .. })
    }

    fn is_due(&self, now: Instant) -> bool {
        matches!(&self.state, SlotState::Waiting { not_before, .. } if not_before.is_none_or(|t| t <= now))
    }

    fn completed_ok(&self) -> bool {
        matches!(&self.state, SlotState::Terminated(t) if t.exit_code == 0)
    }

    fn process(&self) -> Option<Arc<ManagedProcess>> {
        match &self.state {
            SlotState::Running { process, .. } => process.clone(),
            _ => None,
        }
    }

    /// Ready as kubelet reports it (terminating pods report nothing ready).
    fn ready(&self, terminating: bool) -> bool {
        match &self.state {
            SlotState::Running { probe, .. } => {
                !terminating
                    && probe
                        .as_ref()
                        .is_none_or(|probe| probe.ready.load(Ordering::Relaxed))
            }
            SlotState::Terminated(t) => self.kind == Kind::Init && t.exit_code == 0,
            SlotState::Waiting { .. } => false,
        }
    }

    fn status(&self, terminating: bool) -> ContainerStatus {
        let (state, started, container_id) = match &self.state {
            SlotState::Waiting {
                reason, message, ..
            } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                false,
                None,
            ),
            SlotState::Running {
                started_at,
                container_id,
                ..
            } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(started_at.clone()),
                    }),
                    ..Default::default()
                },
                true,
                Some(container_id.clone()),
            ),
            SlotState::Terminated(terminated) => (
                ContainerState {
                    terminated: Some(terminated.clone()),
                    ..Default::default()
                },
                false,
                terminated.container_id.clone(),
            ),
        };
        ContainerStatus {
            name: self.container.name.clone(),
            image: self.container.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id,
            ready: self.ready(terminating),
            started: Some(started),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: self
                .last_terminated
                .clone()
                .map(|terminated| ContainerState {
                    terminated: Some(terminated),
                    ..Default::default()
                }),
            ..Default::default()
        }
    }
}

/// What a pod's containers share, prepared once before the first start.
struct Prepared {
    volumes: BTreeMap<String, PathBuf>,
    service_account_dir: PathBuf,
    kubeconfig_path: Option<PathBuf>,
}

/// Owns one pod on this node: its IP, dirs, processes and status.
struct PodWorker {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
    pod: Pod,
    updates: watch::Receiver<Option<Pod>>,
    dir: PathBuf,
    pod_ip: Option<String>,
    start_time: Time,
    slots: Vec<Slot>,
    prepared: Option<Prepared>,
    init_done: bool,
    terminating: bool,
    conditions: BTreeMap<&'static str, (bool, Time)>,
    last_sent: Option<serde_json::Value>,
    last_error: String,
}

impl PodWorker {
    fn spawn(shared: Arc<Shared>, pod: Pod) -> PodWorkerHandle {
        let (updates_tx, updates_rx) = watch::channel(Some(pod.clone()));
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let short_uid: String = uid.chars().take(8).collect();
        let dir = shared
            .root
            .join("pods")
            .join(format!("{namespace}_{name}_{short_uid}"));
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let current_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let pod_ip = if host_network {
            Some(NODE_IP.to_string())
        } else {
            lock(&shared.ips)
                .allocate(&uid, current_ip)
                .map(|ip| ip.to_string())
        };
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(now);
        let mut slots = Vec::new();
        for container in spec.init_containers.unwrap_or_default() {
            let kind = if container.restart_policy.as_deref() == Some("Always") {
                Kind::Sidecar
            } else {
                Kind::Init
            };
            slots.push(new_slot(container, kind, "PodInitializing"));
        }
        let has_init = !slots.is_empty();
        for container in spec.containers {
            slots.push(new_slot(
                container,
                Kind::Main,
                if has_init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
            ));
        }
        lock(&shared.pod_dirs).insert((namespace.clone(), name.clone()), dir.clone());
        shared.log(format!(
            "pod {namespace}/{name} ({uid}) is on this node, ip {pod_ip:?}, dir {}",
            dir.display()
        ));
        let worker = Self {
            shared: Arc::clone(&shared),
            namespace,
            name,
            uid,
            pod,
            updates: updates_rx,
            dir,
            pod_ip,
            start_time,
            slots,
            prepared: None,
            init_done: false,
            terminating: false,
            conditions: BTreeMap::new(),
            last_sent: None,
            last_error: String::new(),
        };
        let task = tokio::spawn(worker.run());
        shared.track(task.abort_handle());
        PodWorkerHandle {
            updates: updates_tx,
        }
    }

    async fn run(mut self) {
        if self.pod_ip.is_none() {
            self.note_error("no free pod IP in 192.0.2.0/24");
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = self.updates.changed() => {
                    let update = if changed.is_ok() { self.updates.borrow_and_update().clone() } else { None };
                    match update {
                        Some(pod) => self.pod = pod,
                        None => return self.on_gone().await,
                    }
                }
                _ = tick.tick() => {}
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                return self.terminate_and_delete().await;
            }
            self.reconcile().await;
            self.publish_status().await;
        }
    }

    fn note_error(&mut self, error: impl Into<String>) {
        let error = error.into();
        if error != self.last_error {
            self.shared
                .log(format!("pod {}/{}: {error}", self.namespace, self.name));
            self.last_error = error;
        }
    }

    fn container_key(&self, container: &str) -> ContainerKey {
        key(&self.namespace, &self.name, container)
    }

    async fn reconcile(&mut self) {
        if self.pod_ip.is_none() {
            return;
        }
        if self.prepared.is_none() {
            match bounded(self.prepare()).await {
                Ok(prepared) => self.prepared = Some(prepared),
                Err(error) => {
                    let message = format!("{error:#}");
                    self.note_error(format!("preparing volumes/token: {message}"));
                    for slot in &mut self.slots {
                        if let SlotState::Waiting {
                            reason,
                            message: slot_message,
                            ..
                        } = &mut slot.state
                        {
                            *reason = "ContainerCreating".to_owned();
                            *slot_message = Some(message.clone());
                        }
                    }
                    return;
                }
            }
        }
        for index in 0..self.slots.len() {
            self.reap(index);
        }
        let now = Instant::now();
        let mut init_done = true;
        for index in 0..self.slots.len() {
            let (kind, due) = (self.slots[index].kind, self.slots[index].is_due(now));
            match kind {
                Kind::Main => continue,
                Kind::Sidecar => {
                    if due {
                        self.start(index).await;
                    }
                    if !self.slots[index].is_running() {
                        init_done = false;
                        break;
                    }
                }
                Kind::Init => {
                    if self.slots[index].completed_ok() {
                        continue;
                    }
                    if due {
                        self.start(index).await;
                    }
                    init_done = false;
                    break;
                }
            }
        }
        self.init_done = init_done;
        if init_done {
            for index in 0..self.slots.len() {
                if self.slots[index].kind == Kind::Main && self.slots[index].is_due(now) {
                    self.start(index).await;
                }
            }
        }
    }

    /// Notices an exited process and decides between restart and done.
    fn reap(&mut self, index: usize) {
        let restart_policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned());
        let backoff = self.shared.restart_backoff;
        let slot = &mut self.slots[index];
        let SlotState::Running {
            process: Some(process),
            started_at,
            container_id,
            ..
        } = &slot.state
        else {
            return;
        };
        let Some(status) = process.exit_status() else {
            return;
        };
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let terminated = ContainerStateTerminated {
            exit_code,
            signal: status.signal(),
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.to_owned()),
            started_at: Some(started_at.clone()),
            finished_at: Some(now()),
            container_id: Some(container_id.clone()),
            message: None,
        };
        let process = Arc::clone(process);
        let key = key(&self.namespace, &self.name, &slot.container.name);
        self.shared.unregister_process(&key, &process);
        let restart = match slot.kind {
            Kind::Sidecar => true,
            Kind::Init => exit_code != 0 && restart_policy != "Never",
            Kind::Main => match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => true,
            },
        };
        self.shared.log(format!(
            "pod {}/{} container {} exited ({}){}",
            self.namespace,
            self.name,
            slot.container.name,
            describe_exit(status),
            if restart {
                format!(", restarting in {backoff:?}")
            } else {
                String::new()
            }
        ));
        slot.state = if restart {
            slot.last_terminated = Some(terminated);
            SlotState::Waiting {
                reason: "CrashLoopBackOff".to_owned(),
                message: Some(format!("back-off {backoff:?} restarting failed container")),
                not_before: Some(Instant::now() + backoff),
            }
        } else {
            SlotState::Terminated(terminated)
        };
    }

    async fn start(&mut self, index: usize) {
        let container = self.slots[index].container.clone();
        let key = self.container_key(&container.name);
        let retry_at = Some(Instant::now() + CONFIG_RETRY);
        if self.shared.is_blocked(&key) {
            let slot = &mut self.slots[index];
            slot.state = SlotState::Waiting {
                reason: if slot.has_run {
                    "CrashLoopBackOff"
                } else {
                    "ContainerCreating"
                }
                .to_owned(),
                message: Some("start blocked by the test (FakeKubelet::block_starts)".to_owned()),
                not_before: Some(Instant::now() + TICK),
            };
            return;
        }
        let env = tokio::time::timeout(API_CALL_TIMEOUT, self.resolve_env(&container))
            .await
            .unwrap_or_else(|_| Err("the API server did not answer within 10 s".to_owned()));
        let env = match env {
            Ok(env) => env,
            Err(message) => {
                self.note_error(format!("container {}: {message}", container.name));
                self.slots[index].state = SlotState::Waiting {
                    reason: "CreateContainerConfigError".to_owned(),
                    message: Some(message),
                    not_before: retry_at,
                };
                return;
            }
        };
        let Some(ctx) = self.context(&container, env) else {
            return;
        };
        let spec = self
            .shared
            .runner
            .as_ref()
            .and_then(|runner| runner.command(&self.pod, &container, &ctx));
        let slot_starts = self.slots[index].starts + 1;
        let container_id = format!("fake://{}/{}/{slot_starts}", self.uid, container.name);
        let (process, probe) = match spec {
            None => (None, None),
            Some(spec) => match self.spawn_process(&ctx, &spec) {
                Ok(process) => {
                    let process = Arc::new(process);
                    self.shared
                        .register_process(key.clone(), Arc::clone(&process));
                    let probe = spec
                        .readiness
                        .map(|readiness| start_probe(readiness, Arc::clone(&process)));
                    (Some(process), probe)
                }
                Err(error) => {
                    let message = format!("{error:#}");
                    self.note_error(format!("container {}: {message}", container.name));
                    self.slots[index].state = SlotState::Waiting {
                        reason: "RunContainerError".to_owned(),
                        message: Some(message),
                        not_before: Some(Instant::now() + self.shared.restart_backoff),
                    };
                    return;
                }
            },
        };
        self.shared.log(format!(
            "pod {}/{} container {} started{}",
            self.namespace,
            self.name,
            container.name,
            process
                .as_ref()
                .map(|p| format!(" as pid {}", p.pid()))
                .unwrap_or_else(|| " (no process)".to_owned())
        ));
        let slot = &mut self.slots[index];
        if slot.has_run {
            slot.restart_count += 1;
        }
        slot.has_run = true;
        slot.starts = slot_starts;
        let started_at = now();
        slot.state = if process.is_none() && slot.kind == Kind::Init {
            // Nothing to run: a regular init container completes at once.
            SlotState::Terminated(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".to_owned()),
                started_at: Some(started_at.clone()),
                finished_at: Some(started_at),
                container_id: Some(container_id),
                ..Default::default()
            })
        } else {
            let liveness = process.as_ref().and_then(|process| {
                let runner = self.shared.runner.clone()?;
                if !runner.enforce_liveness(&self.pod, &container) {
                    return None;
                }
                let (namespace, pod) = (self.namespace.clone(), self.name.clone());
                let spec =
                    LivenessSpec::of(&container, |port| runner.host_port(&namespace, &pod, port))?;
                let shared = Arc::clone(&self.shared);
                let what = format!(
                    "pod {}/{} container {}",
                    self.namespace, self.name, container.name
                );
                let process = Arc::clone(process);
                Some(AbortOnDrop(tokio::spawn(async move {
                    run_liveness(spec, process, move |m| shared.log(format!("{what}: {m}"))).await;
                })))
            });
            SlotState::Running {
                process,
                started_at,
                container_id,
                probe,
                _liveness: liveness,
            }
        };
    }

    /// What a process of `container` gets (once the pod's volumes exist).
    fn context(&self, container: &Container, env: Vec<(String, String)>) -> Option<PodContext> {
        let prepared = self.prepared.as_ref()?;
        let mounts = container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|mount| {
                let host = prepared.volumes.get(&mount.name)?;
                let host = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                    Some(sub_path) => host.join(sub_path),
                    None => host.clone(),
                };
                Some((mount.mount_path.clone(), host))
            })
            .collect();
        Some(PodContext {
            namespace: self.namespace.clone(),
            pod_name: self.name.clone(),
            pod_uid: self.uid.clone(),
            container_name: container.name.clone(),
            pod_ip: self.pod_ip.clone().unwrap_or_default(),
            pod_dir: self.dir.clone(),
            env,
            volumes: prepared.volumes.clone(),
            mounts,
            service_account_dir: prepared.service_account_dir.clone(),
            token_path: prepared.service_account_dir.join("token"),
            kubeconfig_path: prepared.kubeconfig_path.clone(),
        })
    }

    fn spawn_process(
        &self,
        ctx: &PodContext,
        spec: &ProcessSpec,
    ) -> anyhow::Result<ManagedProcess> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut command = std::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .current_dir(spec.cwd.as_deref().unwrap_or(&self.dir));
        for inherited in ["PATH", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(inherited) {
                command.env(inherited, value);
            }
        }
        command.env("HOME", &self.dir).env("TMPDIR", &tmp);
        command.envs(ctx.env.iter().map(|(k, v)| (k, v)));
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let log = self
            .dir
            .join("logs")
            .join(format!("{}.log", ctx.container_name));
        ManagedProcess::spawn(command, log)
    }

    /// Volumes as host dirs and the service-account token, once per pod.
    async fn prepare(&self) -> anyhow::Result<Prepared> {
        let client = self.shared.client.clone();
        let spec = self.pod.spec.clone().unwrap_or_default();
        std::fs::create_dir_all(self.dir.join("logs"))?;
        let service_account_dir = self.dir.join("serviceaccount");
        std::fs::create_dir_all(&service_account_dir)?;

        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!(
                    "TokenRequest for ServiceAccount {}/{account}",
                    self.namespace
                )
            })?
            .status
            .and_then(|status| status.token)
            .context("TokenRequest answered without a token")?;
        write_private(&service_account_dir.join("token"), token.as_bytes())?;
        std::fs::write(service_account_dir.join("namespace"), &self.namespace)?;
        if let Some(ca) = &self.shared.ca_cert_path {
            std::fs::copy(ca, service_account_dir.join("ca.crt"))
                .with_context(|| format!("copying {}", ca.display()))?;
        }
        let kubeconfig_path = match &self.shared.api_server_url {
            Some(server) => {
                let path = service_account_dir.join("kubeconfig");
                std::fs::write(&path, pod_kubeconfig(server, &service_account_dir))?;
                Some(path)
            }
            None => None,
        };

        let mut volumes = BTreeMap::new();
        for volume in spec.volumes.unwrap_or_default() {
            let host = self.dir.join("volumes").join(&volume.name);
            if let Some(projected) = &volume.projected
                && projected
                    .sources
                    .iter()
                    .flatten()
                    .any(|source| source.service_account_token.is_some())
            {
                volumes.insert(volume.name.clone(), service_account_dir.clone());
                continue;
            }
            std::fs::create_dir_all(&host)?;
            if let Some(source) = &volume.config_map {
                let optional = source.optional.unwrap_or(false);
                if let Some(files) = self.config_map_files(&source.name, optional).await? {
                    write_items(&host, files, source.items.as_deref())?;
                }
            } else if let Some(source) = &volume.secret {
                let optional = source.optional.unwrap_or(false);
                let name = source.secret_name.clone().unwrap_or_default();
                if let Some(files) = self.secret_files(&name, optional).await? {
                    write_items(&host, files, source.items.as_deref())?;
                }
            }
            volumes.insert(volume.name.clone(), host);
        }
        Ok(Prepared {
            volumes,
            service_account_dir,
            kubeconfig_path,
        })
    }

    async fn config_map_files(
        &self,
        name: &str,
        optional: bool,
    ) -> anyhow::Result<Option<BTreeMap<String, Vec<u8>>>> {
        let api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        match api.get_opt(name).await? {
            Some(map) => {
                let mut files: BTreeMap<String, Vec<u8>> = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                files.extend(
                    map.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                Ok(Some(files))
            }
            None if optional => Ok(None),
            None => anyhow::bail!("configmap \"{name}\" not found"),
        }
    }

    async fn secret_files(
        &self,
        name: &str,
        optional: bool,
    ) -> anyhow::Result<Option<BTreeMap<String, Vec<u8>>>> {
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        match api.get_opt(name).await? {
            Some(secret) => Ok(Some(
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            )),
            None if optional => Ok(None),
            None => anyhow::bail!("secret \"{name}\" not found"),
        }
    }

    /// The container's env like kubelet builds it; `Err` is the message of a
    /// `CreateContainerConfigError`.
    async fn resolve_env(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(existing, _)| *existing != name);
            env.push((name, value));
        };
        for source in container.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            let files = if let Some(map) = &source.config_map_ref {
                self.config_map_files(&map.name, map.optional.unwrap_or(false))
                    .await
            } else if let Some(secret) = &source.secret_ref {
                self.secret_files(&secret.name, secret.optional.unwrap_or(false))
                    .await
            } else {
                Ok(None)
            };
            for (name, value) in files.map_err(|e| format!("{e:#}"))?.unwrap_or_default() {
                set(
                    &mut env,
                    format!("{prefix}{name}"),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => Some(expand_references(value, &env)),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        Some(self.field_value(&field.field_path)?)
                    } else if let Some(selector) = &from.secret_key_ref {
                        let optional = selector.optional.unwrap_or(false);
                        let files = self
                            .secret_files(&selector.name, optional)
                            .await
                            .map_err(|e| format!("{e:#}"))?;
                        match files.map(|mut files| files.remove(&selector.key)) {
                            Some(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
                            _ if optional => None,
                            _ => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {}/{}",
                                    selector.key, self.namespace, selector.name
                                ));
                            }
                        }
                    } else if let Some(selector) = &from.config_map_key_ref {
                        let optional = selector.optional.unwrap_or(false);
                        let files = self
                            .config_map_files(&selector.name, optional)
                            .await
                            .map_err(|e| format!("{e:#}"))?;
                        match files.map(|mut files| files.remove(&selector.key)) {
                            Some(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
                            _ if optional => None,
                            _ => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    selector.key, self.namespace, selector.name
                                ));
                            }
                        }
                    } else {
                        // resourceFieldRef, fileKeyRef: nothing a fake node can answer.
                        Some(String::new())
                    }
                }
                (None, None) => Some(String::new()),
            };
            if let Some(value) = value {
                set(&mut env, var.name.clone(), value);
            }
        }
        Ok(env)
    }

    fn field_value(&self, path: &str) -> Result<String, String> {
        let metadata = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let from_map = |map: &Option<BTreeMap<String, String>>, path: &str, prefix: &str| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(
                map.as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        let value = match path {
            "metadata.name" => metadata.name.clone(),
            "metadata.namespace" => metadata.namespace.clone(),
            "metadata.uid" => metadata.uid.clone(),
            "spec.nodeName" => Some(self.shared.node_name.clone()),
            "spec.serviceAccountName" => Some(
                spec.and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_owned()),
            ),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone(),
            "status.hostIP" | "status.hostIPs" => Some(NODE_IP.to_string()),
            _ => from_map(&metadata.labels, path, "metadata.labels['")
                .or_else(|| from_map(&metadata.annotations, path, "metadata.annotations['"))
                .map(Some)
                .ok_or_else(|| format!("unsupported fieldRef {path}"))?,
        };
        Ok(value.unwrap_or_default())
    }

    fn desired_status(&mut self) -> PodStatus {
        let terminating = self.terminating;
        let (init_slots, main_slots): (Vec<&Slot>, Vec<&Slot>) =
            self.slots.iter().partition(|slot| slot.kind != Kind::Main);
        let init_failed = init_slots
            .iter()
            .any(|slot| matches!(&slot.state, SlotState::Terminated(t) if t.exit_code != 0));
        let all_main_done = main_slots
            .iter()
            .all(|slot| matches!(slot.state, SlotState::Terminated(_)));
        let phase = if init_failed {
            "Failed"
        } else if !self.init_done {
            "Pending"
        } else if all_main_done {
            if main_slots.iter().all(|slot| slot.completed_ok()) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if main_slots.iter().any(|slot| slot.has_run) {
            "Running"
        } else {
            "Pending"
        };
        let unready: Vec<&str> = self
            .slots
            .iter()
            .filter(|slot| slot.kind != Kind::Init && !slot.ready(terminating))
            .map(|slot| slot.container.name.as_str())
            .collect();
        let containers_ready = unready.is_empty();
        let gates_ready = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_ref())
            .is_none_or(|gates| {
                gates.iter().all(|gate| {
                    self.pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|conditions| {
                            conditions
                                .iter()
                                .any(|c| c.type_ == gate.condition_type && c.status == "True")
                        })
                })
            });
        let completed = matches!(phase, "Succeeded" | "Failed");
        let unready_message = format!("containers with unready status: [{}]", unready.join(" "));
        let pending_init: Vec<&str> = init_slots
            .iter()
            .filter(|slot| {
                !(slot.completed_ok() || (slot.kind == Kind::Sidecar && slot.is_running()))
            })
            .map(|slot| slot.container.name.as_str())
            .collect();
        let wanted = [
            ("PodReadyToStartContainers", true, None, None),
            (
                "Initialized",
                self.init_done,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                )),
            ),
            (
                "ContainersReady",
                containers_ready && !completed,
                Some(if completed {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
                Some(unready_message.clone()),
            ),
            (
                "Ready",
                containers_ready && gates_ready && !completed,
                Some(if completed {
                    "PodCompleted"
                } else if containers_ready {
                    "ReadinessGatesNotReady"
                } else {
                    "ContainersNotReady"
                }),
                Some(if containers_ready {
                    "the pod's readiness gates are not all True".to_owned()
                } else {
                    unready_message
                }),
            ),
            ("PodScheduled", true, None, None),
        ];
        let mut conditions = Vec::new();
        for (type_, status, reason, message) in wanted {
            let entry = self
                .conditions
                .entry(type_)
                .or_insert_with(|| (status, now()));
            if entry.0 != status {
                *entry = (status, now());
            }
            conditions.push(PodCondition {
                type_: type_.to_owned(),
                status: if status { "True" } else { "False" }.to_owned(),
                reason: if status {
                    None
                } else {
                    reason.map(str::to_owned)
                },
                message: if status { None } else { message },
                last_transition_time: Some(entry.1.clone()),
                observed_generation: self.pod.metadata.generation,
                last_probe_time: None,
            });
        }
        let statuses = |kind_filter: fn(Kind) -> bool| -> Vec<ContainerStatus> {
            self.slots
                .iter()
                .filter(|slot| kind_filter(slot.kind))
                .map(|slot| slot.status(terminating))
                .collect()
        };
        let init_statuses = statuses(|kind| kind != Kind::Main);
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(conditions),
            container_statuses: Some(statuses(|kind| kind == Kind::Main)),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            host_ip: Some(NODE_IP.to_string()),
            host_ips: Some(vec![HostIP {
                ip: NODE_IP.to_string(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: Some(self.start_time.clone()),
            observed_generation: self.pod.metadata.generation,
            ..Default::default()
        }
    }

    async fn publish_status(&mut self) {
        let status = self.desired_status();
        let desired = match serde_json::to_value(&status) {
            Ok(value) => value,
            Err(error) => return self.note_error(format!("serializing status: {error}")),
        };
        let observed = self.pod.status.as_ref();
        // Resend if the stored status lost what we reported (e.g. etcd restored).
        let drifted = observed.and_then(|s| s.pod_ip.clone()) != status.pod_ip
            || observed.and_then(|s| s.phase.clone()) != status.phase;
        if self.last_sent.as_ref() == Some(&desired) && !drifted {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        // The uid makes the patch fail on a newer pod that reuses the name.
        let patch = json!({ "metadata": { "uid": self.uid }, "status": desired });
        match tokio::time::timeout(
            Duration::from_secs(10),
            pods.patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            ),
        )
        .await
        {
            Ok(Ok(pod)) => {
                self.last_sent = Some(desired);
                self.pod.status = pod.status;
            }
            Ok(Err(error)) => self.note_error(format!("status update failed (retrying): {error}")),
            Err(_) => self.note_error("status update timed out (retrying)"),
        }
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    /// Kubelet's order: main containers (and a running init container) together,
    /// then native sidecars in reverse order, all within one grace period.
    async fn stop_processes(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.run_pre_stop_hooks(deadline).await;
        let first: Vec<(String, Arc<ManagedProcess>)> = self
            .slots
            .iter()
            .filter(|slot| slot.kind != Kind::Sidecar)
            .filter_map(|slot| {
                slot.process()
                    .map(|process| (slot.container.name.clone(), process))
            })
            .collect();
        let stops = first
            .iter()
            .map(|(container, process)| self.stop_one(container, process, deadline));
        futures::future::join_all(stops).await;
        let sidecars: Vec<(String, Arc<ManagedProcess>)> = self
            .slots
            .iter()
            .rev()
            .filter(|slot| slot.kind == Kind::Sidecar)
            .filter_map(|slot| {
                slot.process()
                    .map(|process| (slot.container.name.clone(), process))
            })
            .collect();
        for (container, process) in &sidecars {
            self.stop_one(container, process, deadline).await;
        }
        for slot in &mut self.slots {
            if let SlotState::Running {
                process: Some(process),
                ..
            } = &slot.state
            {
                let key = key(&self.namespace, &self.name, &slot.container.name);
                self.shared.unregister_process(&key, process);
            }
            slot.state = SlotState::Waiting {
                reason: "Terminating".to_owned(),
                message: None,
                not_before: None,
            };
        }
    }

    /// Kubelet runs each main container's preStop hook (`httpGet` or
    /// `exec`) before its SIGTERM, within the grace period. Ports are mapped
    /// to loopback by the runner, since pod IPs here are data only.
    async fn run_pre_stop_hooks(&self, deadline: Instant) {
        let Some(runner) = self.shared.runner.clone() else {
            return;
        };
        let Some(spec) = self.pod.spec.as_ref() else {
            return;
        };
        let named_port = |name: &str| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
        };
        for container in &spec.containers {
            let Some(handler) = container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
            else {
                continue;
            };
            if let Some(command) = handler.exec.as_ref().and_then(|e| e.command.as_ref()) {
                self.run_exec_hook(runner.as_ref(), container, command, deadline)
                    .await;
                continue;
            }
            let Some(hook) = handler.http_get.as_ref() else {
                continue;
            };
            let port = match &hook.port {
                IntOrString::Int(port) => Some(*port),
                IntOrString::String(name) => named_port(name),
            };
            let Some(host_port) =
                port.and_then(|p| runner.host_port(&self.namespace, &self.name, p))
            else {
                continue;
            };
            let path = hook.path.clone().unwrap_or_else(|| "/".to_owned());
            let url = format!("http://127.0.0.1:{host_port}{path}");
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match crate::wait::http_get_status(&url, remaining).await {
                Ok(status) => format!("HTTP {status}"),
                Err(error) => format!("{error:#}"),
            };
            self.shared.log(format!(
                "pod {}/{} container {} preStop GET {url}: {outcome}",
                self.namespace, self.name, container.name
            ));
        }
    }

    /// An `exec` preStop hook, as the kubelet runs it in the container:
    /// the container's env, the runner's process, cut off (SIGKILL) at the
    /// grace period's end. Its output goes to `<container>.prestop.log`.
    async fn run_exec_hook(
        &self,
        runner: &dyn ContainerRunner,
        container: &Container,
        command: &[String],
        deadline: Instant,
    ) {
        let what = format!(
            "pod {}/{} container {} preStop exec {command:?}",
            self.namespace, self.name, container.name
        );
        let remaining = deadline.saturating_duration_since(Instant::now());
        let env = tokio::time::timeout(remaining, self.resolve_env(container))
            .await
            .unwrap_or_else(|_| Err("the API server did not answer in time".to_owned()));
        let env = match env {
            Ok(env) => env,
            Err(message) => {
                self.shared.log(format!("{what}: not run: {message}"));
                return;
            }
        };
        let Some(mut ctx) = self.context(container, env) else {
            self.shared.log(format!("{what}: not run: no volumes yet"));
            return;
        };
        let Some(spec) = runner.exec(&self.pod, container, command, &ctx) else {
            self.shared
                .log(format!("{what}: skipped (nothing here plays it)"));
            return;
        };
        ctx.container_name = format!("{}.prestop", container.name);
        let process = match self.spawn_process(&ctx, &spec) {
            Ok(process) => process,
            Err(error) => {
                self.shared.log(format!("{what}: cannot start: {error:#}"));
                return;
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let outcome = match process.wait_exit(remaining).await {
            Some(status) => describe_exit(status),
            None => match process.kill().await {
                Ok(_) => "killed at the end of the grace period".to_owned(),
                Err(error) => format!("not stopped at the end of the grace period: {error:#}"),
            },
        };
        self.shared.log(format!("{what}: {outcome}"));
    }

    async fn stop_one(&self, container: &str, process: &ManagedProcess, deadline: Instant) {
        let grace = deadline.saturating_duration_since(Instant::now());
        let outcome = match process.terminate(grace).await {
            Ok(terminated) => format!(
                "{}{}",
                describe_exit(terminated.status),
                if terminated.forced {
                    " after SIGKILL"
                } else {
                    ""
                }
            ),
            Err(error) => format!("{error:#}"),
        };
        self.shared.log(format!(
            "pod {}/{} container {container} stopped: {outcome}",
            self.namespace, self.name
        ));
    }

    async fn terminate_and_delete(mut self) {
        let grace = self.grace_period();
        self.shared.log(format!(
            "pod {}/{} is being deleted (grace {grace:?})",
            self.namespace, self.name
        ));
        self.terminating = true;
        // Not-ready first, as kubelet does, so endpoints drop the pod before it stops.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.publish_status()).await;
        self.stop_processes(grace).await;
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        loop {
            match pods.delete(&self.name, &params).await {
                Ok(_) => {}
                // Gone already, or the name belongs to a newer pod.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => break,
                Err(error) => self.note_error(format!("final delete failed (retrying): {error}")),
            }
            // Finalizers can keep the pod a while; wait for the watch to say it is gone.
            match tokio::time::timeout(Duration::from_secs(2), self.updates.changed()).await {
                Ok(Err(_)) => break,
                Ok(Ok(())) => {
                    if self.updates.borrow_and_update().is_none() {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        self.release();
    }

    /// Deleted without us seeing a deletionTimestamp (force delete, or while the
    /// watch was down): stop the processes as kubelet would, then forget the pod.
    async fn on_gone(mut self) {
        self.shared.log(format!(
            "pod {}/{} is gone from the API",
            self.namespace, self.name
        ));
        let grace = self.grace_period();
        self.stop_processes(grace).await;
        self.release();
    }

    fn release(&self) {
        lock(&self.shared.ips).release(&self.uid);
        self.shared
            .log(format!("pod {}/{} released", self.namespace, self.name));
    }
}

/// API calls against a frozen or restarting apiserver must not stall a pod
/// worker (or the heartbeat) forever; the caller retries.
async fn bounded<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(API_CALL_TIMEOUT, call)
        .await
        .context("the API server did not answer within 10 s")?
}

fn new_slot(container: Container, kind: Kind, reason: &str) -> Slot {
    Slot {
        container,
        kind,
        state: SlotState::Waiting {
            reason: reason.to_owned(),
            message: None,
            not_before: None,
        },
        restart_count: 0,
        has_run: false,
        starts: 0,
        last_terminated: None,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pod-spec probe (httpGet or tcpSocket on a container port, by number or
/// name) as a check on the loopback port `host_port` maps the port to.
pub fn probe_check(
    probe: &k8s_openapi::api::core::v1::Probe,
    container: &Container,
    host_port: impl Fn(i32) -> Option<u16>,
) -> Option<Readiness> {
    let port_of = |port: &IntOrString| {
        let number = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => {
                container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))?
                    .container_port
            }
        };
        host_port(number)
    };
    if let Some(get) = &probe.http_get {
        let path = get.path.clone().unwrap_or_else(|| "/".to_owned());
        let port = port_of(&get.port)?;
        return Some(Readiness::HttpGet(format!("http://127.0.0.1:{port}{path}")));
    }
    let port = port_of(&probe.tcp_socket.as_ref()?.port)?;
    Some(Readiness::TcpConnect(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port,
    ))))
}

/// One probe's check and timing, with kubelet's defaults (period 10 s,
/// failureThreshold 3, no initial delay).
#[derive(Debug, Clone)]
pub struct ProbeTiming {
    pub check: Readiness,
    pub initial_delay: Duration,
    pub period: Duration,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    fn of(
        probe: &k8s_openapi::api::core::v1::Probe,
        container: &Container,
        host_port: &impl Fn(i32) -> Option<u16>,
    ) -> Option<ProbeTiming> {
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Some(ProbeTiming {
            check: probe_check(probe, container, host_port)?,
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_millis(100)),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        })
    }
}

/// A container's liveness probe, and its startup probe (liveness checks
/// begin only once that succeeded), as the kubelet runs them.
#[derive(Debug, Clone)]
pub struct LivenessSpec {
    pub startup: Option<ProbeTiming>,
    pub liveness: Option<ProbeTiming>,
}

impl LivenessSpec {
    /// None when the container has neither probe (or their ports map nowhere).
    pub fn of(
        container: &Container,
        host_port: impl Fn(i32) -> Option<u16>,
    ) -> Option<LivenessSpec> {
        let spec = LivenessSpec {
            startup: container
                .startup_probe
                .as_ref()
                .and_then(|p| ProbeTiming::of(p, container, &host_port)),
            liveness: container
                .liveness_probe
                .as_ref()
                .and_then(|p| ProbeTiming::of(p, container, &host_port)),
        };
        (spec.startup.is_some() || spec.liveness.is_some()).then_some(spec)
    }
}

/// Runs the startup then the liveness probe against `process`; after
/// `failureThreshold` failures in a row it kills the process (SIGKILL, as
/// the kubelet kills a container whose probe failed; the restart policy and
/// back-off then bring it back). Returns when the process is gone.
pub async fn run_liveness(spec: LivenessSpec, process: Arc<ManagedProcess>, log: impl Fn(String)) {
    let failed = |probe: &ProbeTiming, kind: &str| {
        format!(
            "{kind} probe failed {} times ({:?}), killing the container",
            probe.failure_threshold, probe.check
        )
    };
    if let Some(startup) = &spec.startup {
        tokio::time::sleep(startup.initial_delay).await;
        let mut failures = 0;
        loop {
            if !process.is_running() {
                return;
            }
            if startup.check.check().await {
                break;
            }
            failures += 1;
            if failures >= startup.failure_threshold {
                log(failed(startup, "Startup"));
                let _ = process.kill().await;
                return;
            }
            tokio::time::sleep(startup.period).await;
        }
    }
    let Some(liveness) = &spec.liveness else {
        return;
    };
    tokio::time::sleep(liveness.initial_delay).await;
    let mut failures = 0;
    while process.is_running() {
        if liveness.check.check().await {
            failures = 0;
        } else {
            failures += 1;
            if failures >= liveness.failure_threshold {
                log(failed(liveness, "Liveness"));
                let _ = process.kill().await;
                return;
            }
        }
        tokio::time::sleep(liveness.period).await;
    }
}

fn start_probe(readiness: Readiness, process: Arc<ManagedProcess>) -> ProbeTask {
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let task = tokio::spawn(async move {
        while process.is_running() {
            flag.store(readiness.check().await, Ordering::Relaxed);
            tokio::time::sleep(PROBE_PERIOD).await;
        }
        flag.store(false, Ordering::Relaxed);
    });
    ProbeTask { ready, task }
}

/// Kubernetes `$(VAR)` expansion: defined references are replaced, `$$` is a
/// literal `$`, anything else stays as written.
fn expand_references(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match env.iter().rev().find(|(key, _)| key == name) {
                Some((_, resolved)) => out.push_str(resolved),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Writes keys as files like a configMap/secret volume (all keys, or `items`).
fn write_items(
    dir: &Path,
    mut files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> anyhow::Result<()> {
    let chosen: Vec<(String, Vec<u8>)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|item| Some((item.path.clone(), files.remove(&item.key)?)))
            .collect(),
        None => files.into_iter().collect(),
    };
    for (relative, contents) in chosen {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn pod_kubeconfig(server: &str, service_account_dir: &Path) -> String {
    let quoted =
        |path: PathBuf| serde_json::Value::String(path.to_string_lossy().into_owned()).to_string();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: pod
  user:
    tokenFile: {token}
contexts:
- name: pod
  context:
    cluster: cluster
    user: pod
    namespace: {namespace}
current-context: pod
",
        ca = quoted(service_account_dir.join("ca.crt")),
        token = quoted(service_account_dir.join("token")),
        namespace = std::fs::read_to_string(service_account_dir.join("namespace"))
            .unwrap_or_else(|_| "default".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(
        port: IntOrString,
        path: Option<&str>,
        period: i32,
        threshold: i32,
    ) -> k8s_openapi::api::core::v1::Probe {
        k8s_openapi::api::core::v1::Probe {
            http_get: path.map(|p| k8s_openapi::api::core::v1::HTTPGetAction {
                path: Some(p.to_owned()),
                port: port.clone(),
                ..Default::default()
            }),
            tcp_socket: path
                .is_none()
                .then(|| k8s_openapi::api::core::v1::TCPSocketAction {
                    port,
                    ..Default::default()
                }),
            period_seconds: Some(period),
            failure_threshold: Some(threshold),
            ..Default::default()
        }
    }

    #[test]
    fn liveness_probes_map_container_ports_to_loopback() {
        let container = Container {
            name: "joc".into(),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 4446,
                ..Default::default()
            }]),
            liveness_probe: Some(probe(
                IntOrString::String("http".into()),
                Some("/joc/api/version"),
                7,
                2,
            )),
            startup_probe: Some(probe(IntOrString::Int(4446), None, 1, 30)),
            ..Default::default()
        };
        let spec = LivenessSpec::of(&container, |p| (p == 4446).then_some(40001)).expect("probes");
        let live = spec.liveness.expect("liveness");
        assert!(
            matches!(&live.check, Readiness::HttpGet(u) if u == "http://127.0.0.1:40001/joc/api/version")
        );
        assert_eq!(
            (live.period, live.failure_threshold),
            (Duration::from_secs(7), 2)
        );
        let startup = spec.startup.expect("startup");
        assert!(matches!(startup.check, Readiness::TcpConnect(a) if a.port() == 40001));
        assert_eq!(startup.failure_threshold, 30);
        // An unmapped port: no probe at all.
        assert!(LivenessSpec::of(&container, |_| None).is_none());
        assert!(LivenessSpec::of(&Container::default(), |_| Some(1)).is_none());
    }

    #[tokio::test]
    async fn a_failing_liveness_probe_kills_the_process_a_passing_one_does_not()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let open = listener.local_addr()?;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let timing = |addr: SocketAddr| ProbeTiming {
            check: Readiness::TcpConnect(addr),
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(100),
            failure_threshold: 3,
        };
        let spawn = |name: &str| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            ManagedProcess::spawn(command, dir.path().join(format!("{name}.log"))).map(Arc::new)
        };
        let alive = spawn("alive")?;
        let dead = spawn("dead")?;
        let logged = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logged);
        let killer = tokio::spawn(run_liveness(
            LivenessSpec {
                startup: None,
                liveness: Some(timing(closed)),
            },
            Arc::clone(&dead),
            move |m| lock(&sink).push(m),
        ));
        let keeper = tokio::spawn(run_liveness(
            LivenessSpec {
                startup: Some(timing(open)),
                liveness: Some(timing(open)),
            },
            Arc::clone(&alive),
            |_| {},
        ));
        tokio::time::timeout(Duration::from_secs(10), killer).await??;
        assert!(!dead.is_running(), "killed after three failures");
        assert!(
            lock(&logged)
                .iter()
                .any(|m| m.contains("Liveness probe failed 3 times"))
        );
        assert!(
            !keeper.is_finished() && alive.is_running(),
            "a passing probe keeps it"
        );
        keeper.abort();
        alive.kill().await?;
        drop(listener);
        Ok(())
    }

    #[test]
    fn exec_hooks_run_the_file_the_deepest_mount_holds() {
        let ctx = PodContext {
            namespace: "ns".to_owned(),
            pod_name: "p".to_owned(),
            pod_uid: "u".to_owned(),
            container_name: "c".to_owned(),
            pod_ip: String::new(),
            pod_dir: PathBuf::from("/pod"),
            env: Vec::new(),
            volumes: BTreeMap::new(),
            mounts: BTreeMap::from([
                ("/var/run".to_owned(), PathBuf::from("/host/run")),
                ("/var/run/bin".to_owned(), PathBuf::from("/host/bin")),
            ]),
            service_account_dir: PathBuf::from("/pod/sa"),
            token_path: PathBuf::from("/pod/sa/token"),
            kubeconfig_path: None,
        };
        // A hook's command, and the program and args that play it.
        type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a [&'a str])>);
        let cases: &[Case] = &[
            (
                &["/var/run/bin/tool", "prestop"],
                Some(("/host/bin/tool", &["prestop"])),
            ),
            (&["/var/run/x"], Some(("/host/run/x", &[]))),
            // Not inside a mount, or only a name's prefix: the image's own.
            (&["/usr/bin/curl", "-f"], None),
            (&["/var/runner/x"], None),
            (&[], None),
        ];
        for (command, want) in cases {
            let command: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
            let got = exec_in_mounts(&command, &ctx);
            let got = got.as_ref().map(|spec| {
                (
                    spec.program.display().to_string(),
                    spec.args.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            });
            let want = want.map(|(program, args)| (program.to_owned(), args.to_vec()));
            assert_eq!(got, want, "{command:?}");
        }
    }

    #[test]
    fn expands_references_like_kubernetes() {
        let env = vec![("A".to_owned(), "x".to_owned())];
        assert_eq!(
            expand_references("$(A)-$(B)-$$(A)-$-$", &env),
            "x-$(B)-$(A)-$-$"
        );
    }

    #[test]
    fn ip_pool_round_robin_and_release() {
        let mut pool = IpPool::default();
        let a = pool.allocate("a", None);
        let b = pool.allocate("b", None);
        assert_eq!(a, Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(b, Some(Ipv4Addr::new(192, 0, 2, 11)));
        assert_eq!(pool.allocate("a", None), a);
        pool.release("a");
        // Not reused at once.
        assert_eq!(pool.allocate("c", None), Some(Ipv4Addr::new(192, 0, 2, 12)));
        // A pod that already shows an IP keeps it.
        assert_eq!(
            pool.allocate("d", Some(Ipv4Addr::new(192, 0, 2, 77))),
            Some(Ipv4Addr::new(192, 0, 2, 77))
        );
        for n in 0..300 {
            let _ = pool.allocate(&format!("fill{n}"), None);
        }
        assert_eq!(
            pool.by_pod.len(),
            usize::from(LAST_POD_IP - FIRST_POD_IP) + 1
        );
        assert_eq!(pool.allocate("overflow", None), None);
    }
}
