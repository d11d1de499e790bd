//! The whole joc-ha stack on the harness: a control plane, the fake kubelet
//! running the real sidecar binary and the stand-in cockpit in each member
//! pod, the operator binary, a real database, and one JocCluster. Used by the
//! end-to-end tests, the fault campaign, the benchmarks and the demo.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    ANNOTATION_SWITCHOVER_TO, LABEL_ROLE, ROLE_ACTIVE, active_service_name, pod as pod_names,
    sidecar_env,
};
pub use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::controlplane::ControlPlane;
use crate::db::{Backend, TestDb};
use crate::kubelet::{
    ContainerRunner, FakeKubelet, FakeKubeletConfig, PodContext, ProcessSpec, Readiness,
};
use crate::operator::OperatorProcess;
use crate::process::ManagedProcess;
use crate::proxy::TcpProxy;
use crate::wait::wait_for;

/// Where `make bench` and `make chaos` put the binaries that ship (profile
/// `dist`): a binary found there wins over the one next to the harness.
pub const BIN_DIR_ENV: &str = "JOC_HA_BIN_DIR";

/// A binary of the workspace: in `$JOC_HA_BIN_DIR` if it is there, else next
/// to the running executable (`<target>/<profile>/deps/<test>` →
/// `<target>/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let path = Path::new(&dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(candidate) = dir {
        let path = candidate.join(name);
        if path.is_file() {
            return Ok(path);
        }
        dir = candidate.parent().map(Path::to_path_buf);
        if candidate.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    bail!("{name} not built: run `cargo build --workspace --bins` (make test does)")
}

/// Plays the containers of JocCluster pods: the sidecar binary for the
/// sidecar container, the stand-in cockpit for the cockpit container.
pub struct JocRunner {
    sidecar: PathBuf,
    standin: PathBuf,
    /// js7 mode: the JOC stand-in (`joc-standin`) plays the cockpit.
    joc_standin: PathBuf,
    /// History database of the stand-ins (None: they only follow the role).
    history_url: Option<String>,
    /// Where the stand-ins append their active periods.
    periods_dir: PathBuf,
    ports: PortMap,
    /// Runs this program instead of the sidecar (the benchmarks' baseline).
    labeler: Option<PathBuf>,
    overrides: PodOverrides,
    /// `joc-standin --startup-delay` (None: the stand-in's default).
    joc_startup_delay: Option<String>,
}

/// Loopback ports standing for pods' container ports, shared with the stack
/// so tests can reach a sidecar's HTTP server.
#[derive(Clone, Default)]
pub struct PortMap(Arc<Mutex<HashMap<PortKey, u16>>>);

/// (namespace, pod, container port).
type PortKey = (String, String, i32);

/// Per-pod changes to the processes the runner starts next (the fault
/// campaign routes a pod's database traffic through a proxy, or skews its
/// wall clock); by pod name.
#[derive(Clone, Default)]
pub struct PodOverrides(Arc<Mutex<HashMap<String, PodOverride>>>);

#[derive(Clone, Debug, Default)]
pub struct PodOverride {
    /// The database URL of the pod's sidecar and stand-in.
    pub database_url: Option<String>,
    /// Extra environment of the pod's sidecar.
    pub sidecar_env: Vec<(String, String)>,
}

impl PodOverrides {
    pub fn get(&self, pod: &str) -> PodOverride {
        self.0
            .lock()
            .ok()
            .and_then(|o| o.get(pod).cloned())
            .unwrap_or_default()
    }

    /// Changes the override of `pod`; processes started from now on see it.
    pub fn update(&self, pod: &str, change: impl FnOnce(&mut PodOverride)) {
        if let Ok(mut overrides) = self.0.lock() {
            change(overrides.entry(pod.to_owned()).or_default());
        }
    }
}

impl PortMap {
    /// A stable loopback port per pod and container port, so restarts keep it.
    pub fn port(&self, namespace: &str, pod: &str, container_port: i32) -> Option<u16> {
        let mut ports = self.0.lock().ok()?;
        let key = (namespace.to_owned(), pod.to_owned(), container_port);
        if let Some(port) = ports.get(&key) {
            return Some(*port);
        }
        let port = crate::db::free_port().ok()?;
        ports.insert(key, port);
        Some(port)
    }
}

impl JocRunner {
    pub fn new(history_url: Option<String>, periods_dir: PathBuf) -> Result<JocRunner> {
        Ok(JocRunner {
            sidecar: workspace_binary("joc-ha-sidecar")?,
            standin: workspace_binary("standin-cockpit")?,
            joc_standin: workspace_binary("joc-standin")?,
            joc_startup_delay: None,
            history_url,
            periods_dir,
            ports: PortMap::default(),
            labeler: None,
            overrides: PodOverrides::default(),
        })
    }

    /// Runs the baseline labeler (Kubernetes Lease, client-go timings) in
    /// place of the sidecar.
    pub fn with_baseline_labeler(mut self) -> Result<JocRunner> {
        self.labeler = Some(workspace_binary("baseline-labeler")?);
        Ok(self)
    }

    /// Per-pod overrides, shared with whoever holds a clone.
    pub fn overrides(&self) -> PodOverrides {
        self.overrides.clone()
    }

    /// A stable loopback port per pod and container port, so restarts keep it.
    fn port(&self, namespace: &str, pod: &str, container_port: i32) -> Option<u16> {
        self.ports.port(namespace, pod, container_port)
    }

    /// Where the JOC stand-in of `pod` appends its service periods.
    fn joc_periods_file(&self, pod: &str) -> String {
        self.periods_dir
            .join(format!("{pod}.joc.jsonl"))
            .display()
            .to_string()
    }

    /// js7, the image's layout: the init container `joc-image-files` (the
    /// cockpit image copying its own files) is `joc-standin image-files`;
    /// `joc-config` is the sidecar binary; container `joc` is `joc-standin
    /// --jetty-base` on a per-pod fake JETTY_BASE built from its volumeMounts.
    fn js7_image_layout(
        &self,
        namespace: &str,
        name: &str,
        container: &Container,
        ctx: &PodContext,
    ) -> Option<ProcessSpec> {
        match container.name.as_str() {
            JOC_IMAGE_FILES_INIT_CONTAINER => {
                let resources = ctx.mount(IMAGE_FILES_RESOURCES_DIR)?;
                let classes = ctx.mount(IMAGE_FILES_CLASSES_DIR)?;
                Some(
                    ProcessSpec::new(&self.joc_standin)
                        .arg("image-files")
                        .arg("--resources")
                        .arg(resources.display().to_string())
                        .arg("--classes")
                        .arg(classes.display().to_string()),
                )
            }
            pod_names::JOC_CONFIG_INIT_CONTAINER => {
                Some(ProcessSpec::new(&self.sidecar).args(host_args(container, ctx)))
            }
            pod_names::COCKPIT_CONTAINER => {
                let container_port = container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(pod_names::HTTP_PORT_NAME))
                    .map_or(4446, |p| p.container_port);
                let http = self.port(namespace, name, container_port)?;
                let base = match fake_jetty_base(ctx) {
                    Ok(base) => base,
                    Err(error) => {
                        tracing::error!(pod = name, "building the fake JETTY_BASE: {error:#}");
                        return None;
                    }
                };
                let readiness = container
                    .readiness_probe
                    .as_ref()
                    .and_then(|probe| {
                        crate::kubelet::probe_check(probe, container, |p| {
                            self.port(namespace, name, p)
                        })
                    })
                    .unwrap_or(Readiness::TcpConnect(std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        http,
                    ))));
                let delay = self
                    .joc_startup_delay
                    .as_ref()
                    .map(|d| vec!["--startup-delay".to_owned(), d.clone()])
                    .unwrap_or_default();
                Some(
                    ProcessSpec::new(&self.joc_standin)
                        .arg("--jetty-base")
                        .arg(base.display().to_string())
                        .args(["--hostname", name])
                        .args(["--data-dir", JOC_DATA_DIR])
                        .arg("--periods-file")
                        .arg(self.joc_periods_file(name))
                        .args(["--controllers-retry", CONTROLLERS_RETRY])
                        .args(delay)
                        // The pod's env (RUN_JS_*, JS7_DBMS_* from secretKeyRef)
                        // comes from the kubelet; the port is the mapped one.
                        .env("RUN_JS_HTTP_PORT", http.to_string())
                        .env("RUST_LOG", "info")
                        .readiness(readiness),
                )
            }
            _ => None,
        }
    }
}

// The image's layout, as the operator builds it (`crds/src/names.rs`, `pod`).
pub use joc_ha_crds::names::pod::{
    CLASSES_VOLUME as JOC_CLASSES_VOLUME, IMAGE_CLASSES_DIR as IMAGE_FILES_CLASSES_DIR,
    IMAGE_RESOURCES_DIR as IMAGE_FILES_RESOURCES_DIR, JOC_IMAGE_FILES_INIT_CONTAINER,
    RESOURCES_VOLUME as JOC_RESOURCES_VOLUME,
};
/// JETTY_BASE of the sosberlin/js7 JOC image.
pub const JETTY_BASE: &str = "/var/sos-berlin.com/js7/joc";
/// The stand-ins' wait for a Controller: JOC's is 1 min, the harness's 5 s
/// so that tests registering one do not wait a minute (ours).
pub const CONTROLLERS_RETRY: &str = "5s";

/// The per-pod folder standing for JETTY_BASE (the JOC stand-in's JVM
/// carries it as `-Djetty.base=`).
pub fn jetty_base_of(ctx: &PodContext) -> PathBuf {
    ctx.pod_dir.join("jetty-base")
}

/// A per-pod folder standing for JETTY_BASE: every mount of the container
/// below JETTY_BASE becomes a symlink to the host path the kubelet prepared
/// (subPath applied), so the stand-in reads exactly the paths JOC reads.
fn fake_jetty_base(ctx: &PodContext) -> Result<PathBuf> {
    let base = jetty_base_of(ctx);
    std::fs::create_dir_all(&base)?;
    for (mount, host) in &ctx.mounts {
        let Some(rel) = mount
            .strip_prefix(JETTY_BASE)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty())
        else {
            continue;
        };
        let link = base.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() || meta.is_file() => {
                std::fs::remove_file(&link)?
            }
            Ok(_) => bail!("{} exists and is no symlink", link.display()),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(host, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), host.display()))?;
    }
    Ok(base)
}

impl ContainerRunner for JocRunner {
    fn command(&self, pod: &Pod, container: &Container, ctx: &PodContext) -> Option<ProcessSpec> {
        let namespace = pod.namespace()?;
        let name = pod.name_any();
        // Both modes: the sidecar image copies its executable for the
        // cockpit's preStop hook (into the pod's `joc-ha-bin` dir here).
        if container.name == pod_names::HOOK_INIT_CONTAINER {
            return Some(ProcessSpec::new(&self.sidecar).args(host_args(container, ctx)));
        }
        // js7 mode, the image's layout (contract standin/operator): volume
        // `joc-resources` holds `$JETTY_BASE/resources/joc`, `joc-classes` the
        // classpath's joc-settings.properties; the JOC stand-in plays the image.
        if ctx.volume(JOC_RESOURCES_VOLUME).is_some()
            && container.name != pod_names::SIDECAR_CONTAINER
        {
            return self.js7_image_layout(&namespace, &name, container, ctx);
        }
        // js7 mode, LEGACY layout (remove once the operator's image layout has
        // landed): the init container writes joc.properties and
        // hibernate.cfg.xml into one volume and the stand-in reads that folder,
        // leniently (no ordering, `cluster_id = api`, license assumed).
        if let Some(resources) = ctx.volume(pod_names::RENDERED_CONFIG_VOLUME) {
            match container.name.as_str() {
                pod_names::JOC_CONFIG_INIT_CONTAINER => {
                    return Some(ProcessSpec::new(&self.sidecar).args(host_args(container, ctx)));
                }
                pod_names::COCKPIT_CONTAINER => {
                    let http = self.port(&namespace, &name, 4446)?;
                    return Some(
                        ProcessSpec::new(&self.joc_standin)
                            .arg("--resources-dir")
                            .arg(resources.display().to_string())
                            .args(["--hostname", &name])
                            .args(["--data-dir", JOC_DATA_DIR])
                            .arg("--http-addr")
                            .arg(format!("127.0.0.1:{http}"))
                            .arg("--periods-file")
                            .arg(self.joc_periods_file(&name))
                            .args(["--controllers-retry", CONTROLLERS_RETRY])
                            .env("RUST_LOG", "info")
                            .readiness(Readiness::TcpConnect(std::net::SocketAddr::from((
                                [127, 0, 0, 1],
                                http,
                            )))),
                    );
                }
                _ => {}
            }
        }
        let role_dir = ctx.mount(pod_names::ROLE_DIR)?.to_path_buf();
        let overrides = self.overrides.get(&name);
        match container.name.as_str() {
            pod_names::SIDECAR_CONTAINER => {
                let port = self.port(&namespace, &name, pod_names::SIDECAR_PORT)?;
                let program = self.labeler.as_ref().unwrap_or(&self.sidecar);
                let local = self.port(&namespace, &name, pod_names::SIDECAR_LOCAL_PORT)?;
                let mut spec = ProcessSpec::new(program)
                    .env("JOC_HA_HTTP_ADDR", format!("127.0.0.1:{port}"))
                    .env(sidecar_env::LOCAL_ADDR, format!("127.0.0.1:{local}"))
                    .env("JOC_HA_ROLE_DIR", role_dir.display().to_string())
                    .env("RUST_LOG", "info,kube=warn,sqlx=warn")
                    // Every role change appends a line the tests can read.
                    .env(
                        "JOC_HA_ON_ROLE_CHANGE",
                        format!(
                            "echo \"$JOC_HA_ROLE $JOC_HA_TERM\" >> {}",
                            ctx.pod_dir.join("role-changes.log").display()
                        ),
                    )
                    .readiness(Readiness::HttpGet(format!(
                        "http://127.0.0.1:{port}/readyz"
                    )));
                if let Some(kubeconfig) = &ctx.kubeconfig_path {
                    spec = spec.env("KUBECONFIG", kubeconfig.display().to_string());
                }
                if ctx.volume(JOC_RESOURCES_VOLUME).is_some() {
                    // Fencing: one host, no per-pod process namespace, so
                    // the JVM is told apart by its per-pod fake JETTY_BASE.
                    spec = spec.env(
                        joc_ha_crds::names::sidecar_env::JOC_JETTY_BASE,
                        jetty_base_of(ctx).display().to_string(),
                    );
                    // The stand-ins' wait for a Controller (JOC's is 60 s).
                    spec = spec.env(
                        joc_ha_crds::names::sidecar_env::JOC_CONTROLLERS_RETRY,
                        CONTROLLERS_RETRY.trim_end_matches('s'),
                    );
                }
                if let Some(url) = &overrides.database_url {
                    spec = spec.env("JOC_HA_DATABASE_URL", url.clone());
                }
                for (key, value) in overrides.sidecar_env {
                    spec = spec.env(key, value);
                }
                Some(spec)
            }
            pod_names::COCKPIT_CONTAINER => {
                let http = self.port(&namespace, &name, 4446)?;
                let mut spec = ProcessSpec::new(&self.standin)
                    .args(["--member", &name])
                    .arg("--role-dir")
                    .arg(role_dir.display().to_string())
                    .arg("--http-addr")
                    .arg(format!("127.0.0.1:{http}"))
                    .arg("--periods-file")
                    .arg(
                        self.periods_dir
                            .join(format!("{name}.jsonl"))
                            .display()
                            .to_string(),
                    )
                    .readiness(Readiness::TcpConnect(std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        http,
                    ))));
                if let Some(url) = &self.history_url {
                    let url = overrides.database_url.as_ref().unwrap_or(url);
                    spec = spec.arg("--database-url").arg(url.clone());
                }
                Some(spec)
            }
            _ => None,
        }
    }

    fn host_port(&self, namespace: &str, pod: &str, container_port: i32) -> Option<u16> {
        self.port(namespace, pod, container_port)
    }

    /// The cockpit's preStop hook runs the copy `joc-ha-hook` left in the
    /// pod's volume; its loopback address is this pod's mapped one (pods
    /// share the host's loopback here), as the sidecar's is.
    fn exec(
        &self,
        pod: &Pod,
        _container: &Container,
        command: &[String],
        ctx: &PodContext,
    ) -> Option<ProcessSpec> {
        let namespace = pod.namespace()?;
        let local = self.port(&namespace, &pod.name_any(), pod_names::SIDECAR_LOCAL_PORT)?;
        Some(
            crate::kubelet::exec_in_mounts(command, ctx)?
                .env(sidecar_env::LOCAL_ADDR, format!("127.0.0.1:{local}")),
        )
    }

    /// JOC's container: a JOC whose JVM died is restarted only by its
    /// liveness probe (docs/joc-facts.md fact 3), so the kubelet runs it. The sidecar's
    /// probes are not enforced here (unchanged behaviour for the other streams).
    fn enforce_liveness(&self, _pod: &Pod, container: &Container) -> bool {
        container.name == pod_names::COCKPIT_CONTAINER
    }
}

/// The Controller the js7 stacks register (never contacted).
pub const TEST_CONTROLLER_ID: &str = "controller";
pub const TEST_CONTROLLER_URI: &str = "http://controller.invalid:4444";

/// JOC's data directory in the sosberlin/js7 image, as the operator tells
/// the sidecars by default; the JOC stand-in hashes the same path.
pub const JOC_DATA_DIR: &str = "/var/sos-berlin.com/js7/joc";

/// A container's args with every path inside one of its mounts turned into
/// the host path the fake kubelet prepared.
fn host_args(container: &Container, ctx: &PodContext) -> Vec<String> {
    container
        .args
        .iter()
        .flatten()
        .map(|arg| {
            ctx.mounts
                .iter()
                .find_map(|(mount, host)| {
                    arg.strip_prefix(mount.as_str())
                        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                        .map(|rest| format!("{}{rest}", host.display()))
                })
                .unwrap_or_else(|| arg.clone())
        })
        .collect()
}

/// Records every state of the active Service's EndpointSlices for the whole
/// test: which pods it routed to, and when.
#[derive(Clone, Default)]
pub struct EndpointRecorder {
    inner: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    slices: BTreeMap<String, BTreeSet<String>>,
    /// (instant, pods the Service routes to) after every change.
    timeline: Vec<(Instant, BTreeSet<String>)>,
    /// Every moment the Service had more than one pod.
    violations: Vec<BTreeSet<String>>,
}

impl EndpointRecorder {
    /// Starts watching the EndpointSlices of Service `service`.
    pub fn start(client: Client, namespace: &str, service: &str) -> EndpointRecorder {
        let recorder = EndpointRecorder::default();
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let state = recorder.inner.clone();
        tokio::spawn(async move {
            // Back off on errors: a watch whose API server is gone must not
            // spin (and keep the runtime from shutting down); but briefly, so
            // that the recorder is not blind for long after an API server
            // restart (the default grows to 30 s).
            let stream = watcher(api, config).backoff(RetrySoon);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let Ok(mut state) = state.lock() else { return };
                match event {
                    watcher::Event::Apply(slice) | watcher::Event::InitApply(slice) => {
                        state.slices.insert(slice.name_any(), endpoint_pods(&slice));
                    }
                    watcher::Event::Delete(slice) => {
                        state.slices.remove(&slice.name_any());
                    }
                    watcher::Event::Init => state.slices.clear(),
                    watcher::Event::InitDone => {}
                }
                let routed: BTreeSet<String> = state.slices.values().flatten().cloned().collect();
                if routed.len() > 1 {
                    state.violations.push(routed.clone());
                }
                let changed = state
                    .timeline
                    .last()
                    .is_none_or(|(_, last)| *last != routed);
                if changed {
                    state.timeline.push((Instant::now(), routed));
                }
            }
        });
        recorder
    }

    /// The pods the Service routes to now.
    pub fn current(&self) -> BTreeSet<String> {
        self.inner
            .lock()
            .ok()
            .and_then(|s| s.timeline.last().map(|(_, pods)| pods.clone()))
            .unwrap_or_default()
    }

    /// Every moment two or more pods were behind the Service.
    pub fn violations(&self) -> Vec<BTreeSet<String>> {
        self.inner
            .lock()
            .map(|s| s.violations.clone())
            .unwrap_or_default()
    }

    pub fn timeline(&self) -> Vec<(Instant, BTreeSet<String>)> {
        self.inner
            .lock()
            .map(|s| s.timeline.clone())
            .unwrap_or_default()
    }

    /// Waits until the Service routes to exactly one pod, other than `not`.
    pub async fn wait_single(&self, not: Option<&str>, timeout: Duration) -> Result<String> {
        wait_for(
            "one active endpoint",
            timeout,
            Duration::from_millis(5),
            || async {
                let current = self.current();
                match current.iter().collect::<Vec<_>>().as_slice() {
                    [one] if Some(one.as_str()) != not => Some((*one).clone()),
                    _ => None,
                }
            },
        )
        .await
    }

    /// Asserts the invariant: never two pods behind the active Service.
    pub fn assert_never_two(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "the active Service routed to several pods at once: {violations:?}"
        );
    }
}

/// Retries a failed watch every 200 ms.
struct RetrySoon;

impl Iterator for RetrySoon {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

impl kube::runtime::utils::Backoff for RetrySoon {
    fn reset(&mut self) {}
}

/// All endpoints of a slice, whatever their conditions: the strictest count.
fn endpoint_pods(slice: &EndpointSlice) -> BTreeSet<String> {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect()
}

/// How to build the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub backend: Backend,
    pub members: i32,
    pub api_servers: i32,
    pub ttl: String,
    pub renew_interval: String,
    pub namespace: String,
    pub name: String,
    /// Run the stand-ins' history workload against the database.
    pub history: bool,
    /// Use this database instead of a private server (the backend follows
    /// its scheme); tests that stop the database need the private one.
    pub database_url: Option<String>,
    /// `js7` (the product's default: JOC stand-ins) or `generic`.
    pub workload: WorkloadMode,
    /// js7: JOC's cluster timings (`pollingInterval`,
    /// `heartBeatExceededInterval`); None: fitted to the lease.
    pub joc_timings: Option<(String, String)>,
    /// Label the pods with the benchmarks' baseline (a Kubernetes Lease with
    /// client-go's timings) instead of the sidecar.
    pub baseline_labeler: bool,
    /// Route each member's database traffic through its own [`TcpProxy`]
    /// (in [`Stack::proxies`]), to cut one member off.
    pub db_proxy: bool,
    /// js7: register a Controller (an INV_JS_INSTANCES row of security level
    /// LOW) before the pods start, as a user would in JOC's GUI; without one
    /// JOC's active member never finishes starting its services (docs/joc-facts.md fact 9).
    pub register_controller: bool,
    /// Give the cluster a JS7 license Secret (`spec.license`); without one
    /// JOC never fails over by itself and the sidecars write no switch
    /// request (docs/joc-facts.md fact 10). The stand-in only checks that
    /// the files are where the image's entrypoint expects them.
    pub license: bool,
    /// js7: the stand-ins' time from start to their first heartbeat
    /// (`joc-standin --startup-delay`, e.g. "8s"); None: the stand-in's.
    pub joc_startup_delay: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            backend: Backend::Postgres,
            members: 3,
            api_servers: 0,
            ttl: "5s".into(),
            renew_interval: "1s".into(),
            namespace: "js7".into(),
            name: "joc".into(),
            history: false,
            database_url: None,
            workload: WorkloadMode::Js7,
            joc_timings: None,
            baseline_labeler: false,
            db_proxy: false,
            register_controller: true,
            license: true,
            joc_startup_delay: None,
        }
    }
}

/// A running stack. Dropping it stops everything.
pub struct Stack {
    pub options: StackOptions,
    /// The private database, unless `database_url` named another.
    pub db: Option<TestDb>,
    /// URL of the database the cluster uses (with its password).
    pub database_url: String,
    pub periods_dir: PathBuf,
    /// Loopback ports of the pods' containers.
    pub ports: PortMap,
    pub endpoints: EndpointRecorder,
    /// Per-pod overrides of the processes the kubelet starts next.
    pub overrides: PodOverrides,
    /// Each member's database proxy, by pod name (with `db_proxy`).
    pub proxies: BTreeMap<String, TcpProxy>,
    pub operator: OperatorProcess,
    pub kubelet: FakeKubelet,
    pub plane: ControlPlane,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(options: StackOptions) -> Result<Stack> {
        let (db, database_url) = match &options.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let db = TestDb::start_private(options.backend).await?;
                let url = db.url();
                (Some(db), url)
            }
        };
        let plane = ControlPlane::start().await?;
        let client = plane.client();
        let dir = tempfile::Builder::new().prefix("joc-ha-stack-").tempdir()?;
        let periods_dir = dir.path().join("periods");
        std::fs::create_dir_all(&periods_dir)?;
        if options.history {
            crate::history::create_schema(&database_url).await?;
        }
        if options.workload == WorkloadMode::Js7 && options.register_controller {
            crate::joc::register_controller(
                &database_url,
                TEST_CONTROLLER_ID,
                TEST_CONTROLLER_URI,
                crate::joc::SecurityLevel::Low,
            )
            .await?;
        }

        crate::operator::install_crd(&plane).await?;
        plane.create_namespace(&options.namespace).await?;
        install_sidecar_admission_policy(&plane).await?;

        let mut runner = JocRunner::new(
            options.history.then(|| database_url.clone()),
            periods_dir.clone(),
        )?;
        if options.baseline_labeler {
            runner = runner.with_baseline_labeler()?;
        }
        runner.joc_startup_delay = options.joc_startup_delay.clone();
        let ports = runner.ports.clone();
        let overrides = runner.overrides();
        let mut proxies = BTreeMap::new();
        if options.db_proxy {
            let upstream = crate::proxy::upstream_of(&database_url)?;
            for i in 0..options.members {
                let pod = format!("{}-{i}", options.name);
                let proxy = TcpProxy::start(upstream).await?;
                let url = proxy.url_for(&database_url)?;
                overrides.update(&pod, |o| o.database_url = Some(url));
                proxies.insert(pod, proxy);
            }
        }
        let kubelet = FakeKubelet::start(
            client.clone(),
            FakeKubeletConfig::new(&plane)
                .with_runner(runner)
                .with_restart_backoff(Duration::from_millis(500)),
        )
        .await?;
        let operator = crate::operator::start_with_chart_account(&plane).await?;

        let endpoints = EndpointRecorder::start(
            client.clone(),
            &options.namespace,
            &active_service_name(&options.name),
        );
        let stack = Stack {
            options,
            db,
            database_url,
            periods_dir,
            ports,
            endpoints,
            overrides,
            proxies,
            operator,
            kubelet,
            plane,
            _dir: dir,
        };
        stack.add_cluster(&stack.options.name).await?;
        Ok(stack)
    }

    /// Creates a JocCluster `name` (and its Secret `<name>-db`) with the
    /// stack's options; the stack starts with `options.name`.
    pub async fn add_cluster(&self, name: &str) -> Result<()> {
        let o = &self.options;
        if o.baseline_labeler {
            self.grant_baseline_leases(name).await?;
        }
        let secrets: Api<Secret> = Api::namespaced(self.client(), &o.namespace);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-db")},
            "stringData": {"url": self.database_url},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        if o.license {
            let license: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-license")},
                "stringData": {"js7-license.jar": "stand-in jar", "js7-license.pem": "stand-in key"},
            }))?;
            secrets.create(&PostParams::default(), &license).await?;
        }
        let database_type = match o.backend {
            Backend::Postgres => "postgresql",
            Backend::MariaDb => "mariadb",
            Backend::Sqlite => "sqlite",
        };
        let workload = match (&o.workload, &o.joc_timings) {
            (WorkloadMode::Generic, _) => json!({"mode": "generic"}),
            (WorkloadMode::Js7, None) => json!({"mode": "js7"}),
            (WorkloadMode::Js7, Some((poll, exceeded))) => json!({"mode": "js7", "jocCluster": {
                "pollingInterval": poll, "heartBeatExceededInterval": exceeded}}),
        };
        let cluster: JocCluster = serde_json::from_value(json!({
            "apiVersion": "joc-ha.dev/v1alpha1",
            "kind": "JocCluster",
            "metadata": {"name": name, "namespace": o.namespace},
            "spec": {
                "members": o.members,
                "apiServers": o.api_servers,
                "image": "sosberlin/js7:joc-2-8-1",
                "database": {"type": database_type, "secretRef": {"name": format!("{name}-db")}},
                "lease": {"ttl": o.ttl, "renewInterval": o.renew_interval},
                "workload": workload,
            }
        }))?;
        let mut cluster = cluster;
        if o.license {
            cluster.spec.license = Some(serde_json::from_value(
                json!({"secretRef": {"name": format!("{name}-license")}}),
            )?);
        }
        self.clusters()
            .create(&PostParams::default(), &cluster)
            .await?;
        Ok(())
    }

    /// The baseline labeler runs as the sidecar's ServiceAccount, whose Role
    /// (made by the operator) has no Leases: the harness grants them.
    async fn grant_baseline_leases(&self, cluster: &str) -> Result<()> {
        let namespace = &self.options.namespace;
        let name = format!("{cluster}-baseline-leases");
        let account = joc_ha_crds::names::sidecar_service_account_name(cluster);
        let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            }],
        }))?;
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }))?;
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &role)
            .await
            .context("create the baseline's Role")?;
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &binding)
            .await
            .context("create the baseline's RoleBinding")?;
        Ok(())
    }

    /// Base URL of a member's sidecar HTTP server (its port 9086).
    pub fn sidecar_url(&self, pod: &str) -> Option<String> {
        self.ports
            .port(&self.options.namespace, pod, pod_names::SIDECAR_PORT)
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The sidecar's loopback listener (`/role`, `/prestop`) as a process
    /// inside the pod reaches it: pods share the host's loopback here, so a
    /// test standing for the cockpit container calls this.
    pub fn sidecar_local_url(&self, pod: &str) -> Option<String> {
        self.ports
            .port(&self.options.namespace, pod, pod_names::SIDECAR_LOCAL_PORT)
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The private database server, to stop and start it.
    pub fn db_server(&mut self) -> Result<&mut crate::db::DatabaseServer> {
        self.db
            .as_mut()
            .and_then(TestDb::server_mut)
            .context("this stack has no private database server")
    }

    pub fn client(&self) -> Client {
        self.plane.client()
    }

    pub fn clusters(&self) -> Api<JocCluster> {
        Api::namespaced(self.client(), &self.options.namespace)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client(), &self.options.namespace)
    }

    /// Member pod names, `<name>-0` ...
    pub fn member_names(&self) -> Vec<String> {
        (0..self.options.members)
            .map(|i| format!("{}-{i}", self.options.name))
            .collect()
    }

    /// Waits until every member pod is Ready.
    pub async fn wait_members_ready(&self, timeout: Duration) -> Result<()> {
        let pods = self.pods();
        let names = self.member_names();
        wait_for(
            "all members Ready",
            timeout,
            Duration::from_millis(100),
            || {
                let pods = pods.clone();
                let names = names.clone();
                async move {
                    for name in &names {
                        let pod = pods.get(name).await.ok()?;
                        if !crate::stack::is_ready(&pod) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await
    }

    /// Whether the cluster's pods have the image's layout (volume
    /// `joc-resources`) rather than the legacy one. Looks at the first member pod.
    pub async fn js7_image_layout(&self) -> Result<bool> {
        let name = self
            .member_names()
            .into_iter()
            .next()
            .context("no members")?;
        let pod = self.pods().get(&name).await?;
        Ok(pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| v.name == JOC_RESOURCES_VOLUME))
    }

    /// Pods labeled active now.
    pub async fn labeled_active(&self) -> Result<Vec<String>> {
        let list = self
            .pods()
            .list(&kube::api::ListParams::default().labels(&format!("{LABEL_ROLE}={ROLE_ACTIVE}")))
            .await?;
        Ok(list.items.iter().map(|p| p.name_any()).collect())
    }

    /// Requests a switch-over the way a user does.
    pub async fn annotate_switchover(&self, value: &str) -> Result<()> {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_SWITCHOVER_TO: value}}});
        self.clusters()
            .patch(
                &self.options.name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .context("annotate the JocCluster")?;
        Ok(())
    }

    /// The sidecar process of a member, to signal it.
    pub fn sidecar(&self, pod: &str) -> Option<Arc<ManagedProcess>> {
        self.kubelet
            .process(&self.options.namespace, pod, pod_names::SIDECAR_CONTAINER)
    }

    /// The stand-in cockpit process of a member.
    pub fn cockpit(&self, pod: &str) -> Option<Arc<ManagedProcess>> {
        self.kubelet
            .process(&self.options.namespace, pod, pod_names::COCKPIT_CONTAINER)
    }

    /// The Events on the JocCluster, oldest first.
    async fn jocluster_events(&self) -> Result<Vec<k8s_openapi::api::events::v1::Event>> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client(), &self.options.namespace);
        let mut all: Vec<_> = events
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("JocCluster"))
            .collect();
        all.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        Ok(all)
    }

    /// The last `n` Events on the JocCluster as (reason, note), oldest first.
    pub async fn recent_cluster_events(&self, n: usize) -> Result<Vec<(String, String)>> {
        let all = self.jocluster_events().await?;
        let skip = all.len().saturating_sub(n);
        Ok(all
            .into_iter()
            .skip(skip)
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Notes of the Events with `reason` on the JocCluster, oldest first.
    pub async fn cluster_events(&self, reason: &str) -> Result<Vec<String>> {
        Ok(self
            .jocluster_events()
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect())
    }

    /// The first member (by ordinal) other than `pod`.
    pub fn member_other_than(&self, pod: &str) -> Option<String> {
        self.member_names().into_iter().find(|name| name != pod)
    }

    /// Waits until an Event with `reason` whose note contains `text` exists.
    pub async fn wait_event(&self, reason: &str, text: &str, timeout: Duration) -> Result<String> {
        wait_for(
            &format!("an Event {reason} mentioning {text:?}"),
            timeout,
            Duration::from_millis(100),
            || async {
                self.cluster_events(reason)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|note| note.contains(text))
            },
        )
        .await
    }

    /// The JocCluster as stored now.
    pub async fn cluster(&self) -> Result<JocCluster> {
        Ok(self.clusters().get(&self.options.name).await?)
    }

    /// Deletes a pod gracefully, as `kubectl delete pod` does.
    pub async fn delete_pod(&self, pod: &str) -> Result<()> {
        self.pods().delete(pod, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// The chart's ValidatingAdmissionPolicies that confine the sidecars to the
/// role label of their own cluster's pods, and keep everyone else off it: the
/// sidecars run under them here too.
async fn install_sidecar_admission_policy(plane: &ControlPlane) -> Result<()> {
    let yaml = crate::operator::helm_template(
        plane,
        "joc-ha",
        "joc-ha-system",
        &[
            "--show-only",
            "templates/sidecar-admission-policy.yaml",
            "--show-only",
            "templates/role-label-guard.yaml",
        ],
    )
    .await?;
    crate::operator::kubectl_apply(plane, &yaml, &[]).await?;
    Ok(())
}

pub use joc_ha_crds::pods::is_ready;
