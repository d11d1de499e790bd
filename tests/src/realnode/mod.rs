//! Real Kubernetes nodes on this machine (docs/real-node.md): per node a real
//! containerd, kubelet and kube-proxy (nftables) with the CNI bridge, in a
//! network and mount namespace of its own, its cgroups below `/realnode`,
//! every address in 198.18.0.0/15 (see `plan.rs`).
//!
//! ```text
//!  root netns: apiserver on 198.18.4k.1 (link jhrn<k>)
//!        │ veth
//!  hub netns (bridge br0) ── veth ── node netns 198.18.4k.1i (eth0)
//!                                     └ cni0 198.18.(4k+i).1/24 ── pods
//! ```
//!
//! Nothing touches the root namespace's firewall or the machine's sysctls:
//! the kubelet's sysctl writes land in files shadowing /proc/sys inside the
//! node's mount namespace; forwarding is on only inside the node's netns.
//! Teardown runs in Drop (after a panic too) and, for what a killed run left,
//! at the next start: see `sweep.rs`.
//!
//! Use [`RealCluster::start`], or [`RealNetwork::create`] →
//! [`ControlPlane::start_with`]`(network.control_plane_options())` →
//! [`RealNode::start`] for each node.

pub mod config;
mod image;
pub mod plan;
pub mod sweep;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::controlplane::{ControlPlane, ControlPlaneOptions, openssl};
use crate::process::{ManagedProcess, describe_exit};
use config::NodePaths;
pub use plan::{NodePlan, Slot};
use plan::{SLOT_DIR, cidr};
pub use sweep::Footprint;
use sweep::run;

const NODE_READY_TIMEOUT: Duration = Duration::from_secs(90);
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_LINES_ON_FAILURE: usize = 40;
/// Set to keep the nodes' logs (as the control plane keeps its dir).
const KEEP_ENV: &str = "JOC_HA_KEEP_TMP";
/// A slot dir without an owner line this old is a crashed claim, not one in progress.
const UNOWNED_SLOT_AGE: Duration = Duration::from_secs(30);
/// The binaries real nodes call; `make setup` installs them.
const REQUIRED_TOOLS: [&str; 12] = [
    "/usr/sbin/runc",
    "ip",
    "nsenter",
    "unshare",
    "mount",
    "umount",
    "nft",
    "iptables",
    "conntrack",
    "tar",
    "curl",
    "openssl",
];
/// Kernel knobs the kubelet "fixes" on start (docs/real-node.md): inside the
/// node's mount namespace they are regular files holding what it wants.
const SHADOWED_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Fails with what to do when this machine cannot run real nodes.
pub fn check_requirements() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "real nodes need root (network and mount namespaces, cgroups, overlayfs); run the test as root"
        );
    }
    if !Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        bail!(
            "real nodes need cgroup v1 hierarchies under /sys/fs/cgroup (pids, memory, cpu, ...); this machine has none"
        );
    }
    for tool in REQUIRED_TOOLS {
        let found = if tool.starts_with('/') {
            Path::new(tool).is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file())
            })
        };
        if !found {
            bail!("real nodes need {tool}: run `make setup`");
        }
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `JOC_HA_REALNODE_BIN`, else what `scripts/realnode.sh --print` says.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("JOC_HA_REALNODE_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = repo_root().join("scripts/realnode.sh");
            let out = run("bash", [script.as_os_str(), "--print".as_ref()])?;
            PathBuf::from(out.trim())
        }
    };
    for binary in [
        "kubelet",
        "kube-proxy",
        "containerd",
        "ctr",
        "pause",
        "cni/bridge",
    ] {
        if !dir.join(binary).is_file() {
            bail!(
                "real-node binaries not built: {} is missing; run `scripts/realnode.sh`",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

/// `JOC_HA_IMAGES_DIR`, else `$CARGO_TARGET_DIR/images` (`make images`).
pub fn images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JOC_HA_IMAGES_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("images")
}

/// The archive `<name>.oci.tar` of `make images`, checked to exist.
pub fn image_archive(name: &str) -> anyhow::Result<PathBuf> {
    let path = images_dir().join(format!("{name}.oci.tar"));
    if !path.is_file() {
        bail!(
            "image archive {} is missing: run `make images`",
            path.display()
        );
    }
    Ok(path)
}

/// The reference an image of `make images` is imported as: `joc-ha.dev/<name>`
/// or `ghcr.io/joc-ha/<name>`, tagged with the chart's appVersion.
pub fn image_ref(name: &str) -> anyhow::Result<String> {
    let chart = repo_root().join("charts/joc-ha/Chart.yaml");
    let text =
        std::fs::read_to_string(&chart).with_context(|| format!("reading {}", chart.display()))?;
    let tag = text
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .with_context(|| format!("{} has no appVersion", chart.display()))?;
    let registry = if name.starts_with("joc-ha-") {
        "ghcr.io/joc-ha"
    } else {
        "joc-ha.dev"
    };
    Ok(format!("{registry}/{name}:{tag}"))
}

/// The network of one environment: a slot, a hub netns with a bridge, and
/// the root end `jhrn<k>` (198.18.4k.1/24) where the apiserver listens.
#[derive(Debug)]
pub struct RealNetwork {
    slot: Slot,
    dir: PathBuf,
}

impl RealNetwork {
    /// Sweeps what killed runs left, claims a free slot and builds its network.
    pub fn create() -> anyhow::Result<Self> {
        check_requirements()?;
        sweep_stale_slots();
        let mut claimed = None;
        for k in 1..=plan::MAX_SLOT {
            // Another environment's teardown removes the parent when it is empty.
            std::fs::create_dir_all(SLOT_DIR).with_context(|| format!("creating {SLOT_DIR}"))?;
            let Some(slot) = Slot::new(k) else { continue };
            let dir = Path::new(SLOT_DIR).join(format!("slot-{k}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    std::fs::write(dir.join("owner"), sweep::owner_line())?;
                    claimed = Some((slot, dir));
                    break;
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // The parent went between create_dir_all and here: try again.
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound && k < plan::MAX_SLOT =>
                {
                    continue;
                }
                Err(error) => return Err(error).context(format!("claiming {}", dir.display())),
            }
        }
        let (slot, dir) = claimed.with_context(|| {
            format!(
                "all {} real-node slots in {SLOT_DIR} are in use",
                plan::MAX_SLOT
            )
        })?;
        let network = Self { slot, dir };
        // Unowned things of this slot (a run killed after its slot dir went).
        let stale = network.footprint();
        let stale = Footprint {
            dirs: Vec::new(),
            ..stale
        };
        for problem in stale.teardown() {
            eprintln!("joc-ha-tests: real-node sweep: {problem}");
        }
        // On error, Drop tears down what was built.
        network.build()?;
        Ok(network)
    }

    fn build(&self) -> anyhow::Result<()> {
        let ns = self.dir.join("ns");
        private_ns_dir(&ns)?;
        let hub = self.hub_netns();
        touch(&hub)?;
        run(
            "unshare",
            [format!("--net={}", hub.display()), "true".into()],
        )?;
        let root_link = self.slot.scope();
        in_netns(&hub, "ip", &["link", "set", "lo", "up"])?;
        in_netns(&hub, "ip", &["link", "add", "br0", "type", "bridge"])?;
        in_netns(&hub, "ip", &["link", "set", "br0", "up"])?;
        run(
            "ip",
            [
                "link",
                "add",
                &root_link,
                "type",
                "veth",
                "peer",
                "name",
                "up0",
                "netns",
                &hub.to_string_lossy(),
            ],
        )?;
        run(
            "ip",
            [
                "addr",
                "add",
                &format!("{}/24", self.slot.root_address()),
                "dev",
                &root_link,
            ],
        )?;
        run("ip", ["link", "set", &root_link, "up"])?;
        in_netns(&hub, "ip", &["link", "set", "up0", "master", "br0", "up"])?;
        Ok(())
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The root end's address: bind the apiserver and databases here.
    pub fn root_address(&self) -> std::net::Ipv4Addr {
        self.slot.root_address()
    }

    /// The control plane this network's nodes need (apiserver on the root end,
    /// Service range of the slot).
    pub fn control_plane_options(&self) -> ControlPlaneOptions {
        ControlPlaneOptions {
            bind_address: Some(self.slot.root_address()),
            service_range: Some(self.slot.service_range()),
        }
    }

    fn hub_netns(&self) -> PathBuf {
        self.dir.join("ns/hub")
    }

    /// Everything this environment may have created, nodes included.
    pub fn footprint(&self) -> Footprint {
        let mut dirs = recorded_dirs(&self.dir);
        dirs.push(self.dir.clone());
        Footprint {
            scope: self.slot.scope(),
            dirs,
            blocks: vec![self.slot.block(), self.slot.service_range()],
        }
    }

    fn record_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dirs"))?;
        writeln!(file, "{}", dir.display())?;
        Ok(())
    }
}

impl Drop for RealNetwork {
    fn drop(&mut self) {
        for problem in self.footprint().teardown() {
            eprintln!("joc-ha-tests: real-node teardown: {problem}");
        }
        // Shared by every slot: removed when the last one is gone.
        let _ = std::fs::remove_dir(SLOT_DIR);
    }
}

fn recorded_dirs(slot_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(slot_dir.join("dirs"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Tears down the slots whose owner process is gone (a killed test run);
/// [`RealNetwork::create`] calls it first.
pub fn sweep_stale_slots() {
    let Ok(entries) = std::fs::read_dir(SLOT_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(slot) = name
            .strip_prefix("slot-")
            .and_then(|k| k.parse().ok())
            .and_then(Slot::new)
        else {
            continue;
        };
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < UNOWNED_SLOT_AGE);
        if sweep::owner_alive(&owner) || (owner.is_empty() && young) {
            continue;
        }
        let mut dirs = recorded_dirs(&dir);
        dirs.push(dir.clone());
        let footprint = Footprint {
            scope: slot.scope(),
            dirs,
            blocks: vec![slot.block(), slot.service_range()],
        };
        eprintln!(
            "joc-ha-tests: sweeping real-node slot {} left by a killed run (owner {:?})",
            slot.number(),
            owner.trim()
        );
        for problem in footprint.teardown() {
            eprintln!("joc-ha-tests: real-node sweep: {problem}");
        }
    }
    // Shared by every slot: removed when the last one is gone.
    let _ = std::fs::remove_dir(SLOT_DIR);
}

fn touch(path: &Path) -> anyhow::Result<()> {
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// A dir to hold namespace files: bind-mounted on itself and private, as a
/// namespace file may only be bind-mounted on a private mount.
fn private_ns_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    run("mount", [Path::new("--bind"), dir, dir])?;
    run("mount", [Path::new("--make-private"), dir])?;
    Ok(())
}

fn in_netns(netns: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec![format!("--net={}", netns.display()), program.to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    run("nsenter", all)
}

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// 1..=3: the node's place in the slot's plan.
    pub index: u8,
    /// OCI archives imported into its containerd (the pause image always is).
    pub images: Vec<PathBuf>,
}

impl NodeOptions {
    /// Node `index` with the images of `make images` named in `images`
    /// (e.g. `standin-cockpit`, `joc-ha-sidecar`).
    pub fn new(index: u8, images: &[&str]) -> anyhow::Result<Self> {
        Ok(Self {
            index,
            images: images
                .iter()
                .map(|name| image_archive(name))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// How long the phases of a node's start took.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeTimings {
    pub namespaces: Duration,
    pub containerd: Duration,
    pub images: Duration,
    pub kubelet_ready: Duration,
    pub kube_proxy: Duration,
    pub total: Duration,
}

/// One real node; torn down on drop (pods, kubelet, containerd and its shims,
/// mounts, netns, cgroups, state dir).
// Fields drop in order after Drop::drop: the daemons are already dead then.
pub struct RealNode {
    kube_proxy: ManagedProcess,
    kubelet: ManagedProcess,
    containerd: ManagedProcess,
    plan: NodePlan,
    paths: NodePaths,
    timings: NodeTimings,
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("name", &self.plan.node_name())
            .field("root", &self.paths.root)
            .finish_non_exhaustive()
    }
}

/// Tears down a node whose start failed half-way (after its processes drop).
struct NodeStartGuard {
    footprint: Option<Footprint>,
    logs: PathBuf,
}

impl Drop for NodeStartGuard {
    fn drop(&mut self) {
        if let Some(footprint) = self.footprint.take() {
            print_log_tails(&self.logs);
            keep_logs(&self.logs);
            for problem in footprint.teardown() {
                eprintln!("joc-ha-tests: real-node teardown: {problem}");
            }
        }
    }
}

impl RealNode {
    /// Brings up node `options.index` of `network` against `plane` (started
    /// with `network.control_plane_options()`) and waits until the Node is
    /// Ready and kube-proxy is healthy.
    pub async fn start(
        plane: &ControlPlane,
        network: &RealNetwork,
        options: NodeOptions,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut timings = NodeTimings::default();
        let plan = network.slot.node(options.index).with_context(|| {
            format!(
                "node index {} is outside 1..={}",
                options.index,
                plan::MAX_NODES
            )
        })?;
        if plane.api_address() != network.root_address() {
            bail!(
                "the control plane listens on {}, not on the network's {}: start it with network.control_plane_options()",
                plane.api_address(),
                network.root_address()
            );
        }
        let bin = bin_dir()?;
        let scope = plan.scope();
        let root = tempfile::Builder::new()
            .prefix(&format!("joc-ha-rn-{scope}-"))
            .tempdir()
            .context("creating the node's temp dir")?
            .keep();
        network.record_dir(&root)?;
        let paths = NodePaths { root: root.clone() };
        let guard = NodeStartGuard {
            footprint: Some(Footprint {
                scope: scope.clone(),
                dirs: vec![root.clone()],
                blocks: Vec::new(),
            }),
            logs: paths.join("logs"),
        };
        for sub in [
            "ns",
            "logs",
            "certs",
            "containerd",
            "cni/net.d",
            "cni/ipam",
            "pod-logs",
            "kubelet",
            "kubelet-plugins",
            "sysctl",
            "images/work",
        ] {
            std::fs::create_dir_all(paths.join(sub))?;
        }
        std::fs::write(paths.join("resolv.conf"), config::resolv_conf(plan))?;
        create_cgroups(plan)?;
        let net = paths.join("ns/net");
        let mnt = paths.join("ns/mnt");
        build_node_namespaces(network, plan, &paths, &net, &mnt)?;
        timings.namespaces = started.elapsed();

        write_node_certs(plane, plan, &paths).await?;
        let ca = plane.ca_cert_path();
        std::fs::write(
            paths.join("containerd.toml"),
            config::containerd_toml(&paths, &bin),
        )?;
        std::fs::write(
            paths.join("kubelet.yaml"),
            config::kubelet_yaml(plan, &paths, &ca),
        )?;
        std::fs::write(
            paths.join("cni/net.d/10-realnode.conflist"),
            config::cni_conflist(plan, &paths),
        )?;
        std::fs::write(
            paths.join("kube-proxy.yaml"),
            config::kube_proxy_yaml(plan, &paths.join("certs/kube-proxy.kubeconfig")),
        )?;
        let pause = paths.join("images/pause.oci.tar");
        image::write_pause_archive(&bin.join("pause"), &paths.join("images/work"), &pause)?;

        let spawn = |name: &str, program: PathBuf, args: Vec<String>| {
            spawn_in_node(plan, &bin, &net, &mnt, &paths, name, program, args)
        };
        let phase = Instant::now();
        let containerd = spawn(
            "containerd",
            bin.join("containerd"),
            vec![
                "--config".into(),
                paths.join("containerd.toml").display().to_string(),
            ],
        )?;
        let socket = paths.containerd_socket();
        let ctr = bin.join("ctr");
        wait_daemon(&containerd, "containerd to answer `ctr version`", || {
            run(
                &ctr.to_string_lossy(),
                ["--address".as_ref(), socket.as_os_str(), "version".as_ref()],
            )
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        })
        .await?;
        timings.containerd = phase.elapsed();

        let phase = Instant::now();
        for archive in std::iter::once(&pause).chain(&options.images) {
            let ctr = ctr.clone();
            let socket = socket.clone();
            let file = archive.clone();
            tokio::task::spawn_blocking(move || {
                run(
                    &ctr.to_string_lossy(),
                    [
                        "--address".as_ref(),
                        socket.as_os_str(),
                        "-n".as_ref(),
                        "k8s.io".as_ref(),
                        "images".as_ref(),
                        "import".as_ref(),
                        file.as_os_str(),
                    ],
                )
            })
            .await
            .context("image import task")?
            .with_context(|| format!("importing {}", archive.display()))?;
        }
        timings.images = phase.elapsed();

        let phase = Instant::now();
        let node_name = plan.node_name();
        let kubelet = spawn(
            "kubelet",
            bin.join("kubelet"),
            vec![
                format!("--config={}", paths.join("kubelet.yaml").display()),
                format!(
                    "--kubeconfig={}",
                    paths.join("certs/kubelet.kubeconfig").display()
                ),
                format!("--root-dir={}", paths.join("kubelet").display()),
                format!("--cert-dir={}", paths.join("kubelet/pki").display()),
                format!("--hostname-override={node_name}"),
                format!("--node-ip={}", plan.address()),
                "--v=2".into(),
            ],
        )?;
        let nodes: Api<Node> = Api::all(plane.client());
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            if let Some(status) = kubelet.exit_status() {
                bail!(
                    "kubelet exited ({}) before its Node was Ready; log {}:\n{}",
                    describe_exit(status),
                    kubelet.log_path().display(),
                    kubelet.log_tail(LOG_LINES_ON_FAILURE)
                );
            }
            let observed = match nodes.get_opt(&node_name).await {
                Ok(Some(node)) if node_ready(&node) => break,
                Ok(Some(_)) => "registered, not Ready".to_owned(),
                Ok(None) => "not registered".to_owned(),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "Node {node_name} not Ready after {NODE_READY_TIMEOUT:?} ({observed}); kubelet log {}:\n{}",
                    kubelet.log_path().display(),
                    kubelet.log_tail(LOG_LINES_ON_FAILURE)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        timings.kubelet_ready = phase.elapsed();

        let phase = Instant::now();
        let kube_proxy = spawn(
            "kube-proxy",
            bin.join("kube-proxy"),
            vec![
                format!("--config={}", paths.join("kube-proxy.yaml").display()),
                "--v=2".into(),
            ],
        )?;
        wait_daemon(&kube_proxy, "kube-proxy /healthz", || {
            in_netns(
                &net,
                "curl",
                &["-sf", "-m", "1", "http://127.0.0.1:10256/healthz"],
            )
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        })
        .await?;
        timings.kube_proxy = phase.elapsed();
        timings.total = started.elapsed();
        eprintln!(
            "joc-ha-tests: real node {node_name} ({}) up in {:.1?}: namespaces {:.1?}, containerd {:.1?}, images {:.1?}, kubelet Ready {:.1?}, kube-proxy {:.1?}; dir {}",
            plan.address(),
            timings.total,
            timings.namespaces,
            timings.containerd,
            timings.images,
            timings.kubelet_ready,
            timings.kube_proxy,
            root.display()
        );
        let mut guard = guard;
        guard.footprint = None;
        Ok(Self {
            kube_proxy,
            kubelet,
            containerd,
            plan,
            paths,
            timings,
        })
    }

    pub fn name(&self) -> String {
        self.plan.node_name()
    }

    pub fn plan(&self) -> NodePlan {
        self.plan
    }

    pub fn address(&self) -> std::net::Ipv4Addr {
        self.plan.address()
    }

    pub fn timings(&self) -> NodeTimings {
        self.timings
    }

    pub fn log_dir(&self) -> PathBuf {
        self.paths.join("logs")
    }

    /// The node's network namespace file (for `nsenter --net=…`).
    pub fn netns(&self) -> PathBuf {
        self.paths.join("ns/net")
    }

    pub fn kubelet_process(&self) -> &ManagedProcess {
        &self.kubelet
    }

    pub fn containerd_process(&self) -> &ManagedProcess {
        &self.containerd
    }

    pub fn kube_proxy_process(&self) -> &ManagedProcess {
        &self.kube_proxy
    }

    /// What this node may have created (checked empty after its drop).
    pub fn footprint(&self) -> Footprint {
        Footprint {
            scope: self.plan.scope(),
            dirs: vec![self.paths.root.clone()],
            blocks: Vec::new(),
        }
    }

    /// Runs `program args` in the node's network namespace (a client there
    /// sees ClusterIPs as pods do: kube-proxy's rules live in this netns).
    pub async fn run_in_netns(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = tokio::process::Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns().display()))
            .arg(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .with_context(|| format!("{program} in {} did not finish in 60 s", self.name()))?
            .with_context(|| format!("running {program} in {}", self.name()))
    }

    /// GET `url` with curl from inside the node's netns; the body on 2xx.
    pub async fn http_get(&self, url: &str, timeout: Duration) -> anyhow::Result<String> {
        let seconds = format!("{:.3}", timeout.as_secs_f64());
        let output = self
            .run_in_netns("curl", &["-sS", "-f", "-m", &seconds, url])
            .await?;
        if !output.status.success() {
            bail!(
                "GET {url} from {} failed: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let logs = self.log_dir();
        if std::thread::panicking() {
            print_log_tails(&logs);
        }
        // The state dir goes (mounts, snapshots); the logs may stay.
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            keep_logs(&logs);
        }
        // The kubelet first, so that it restarts nothing; the rest (containers,
        // shims, containerd) by the cgroups and dirs they are in.
        let _ = self.kube_proxy.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.kubelet.signal(nix::sys::signal::Signal::SIGKILL);
        for problem in self.footprint().teardown() {
            eprintln!("joc-ha-tests: real-node teardown: {problem}");
        }
        // Shared by every slot: removed when the last one is gone.
        let _ = std::fs::remove_dir(SLOT_DIR);
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn print_log_tails(logs: &Path) {
    for name in ["containerd", "kubelet", "kube-proxy"] {
        let path = logs.join(format!("{name}.log"));
        if path.exists() {
            eprintln!(
                "---- last {LOG_LINES_ON_FAILURE} lines of {} ----\n{}",
                path.display(),
                crate::process::log_tail(&path, LOG_LINES_ON_FAILURE)
            );
        }
    }
}

/// Copies a failed node's logs out of its state dir, which teardown removes.
fn keep_logs(logs: &Path) {
    let Ok(kept) = tempfile::Builder::new()
        .prefix("joc-ha-rn-logs-")
        .tempdir()
        .map(|d| d.keep())
    else {
        return;
    };
    if let Ok(entries) = std::fs::read_dir(logs) {
        for entry in entries.flatten() {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
    }
    eprintln!("joc-ha-tests: real-node logs kept at {}", kept.display());
}

async fn wait_daemon<F>(process: &ManagedProcess, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    loop {
        if let Some(status) = process.exit_status() {
            bail!(
                "{} exited ({}) while waiting for {what}; log {}:\n{}",
                process.name(),
                describe_exit(status),
                process.log_path().display(),
                process.log_tail(LOG_LINES_ON_FAILURE)
            );
        }
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(observation) => observation,
        };
        if Instant::now() > deadline {
            bail!(
                "timed out after {DAEMON_TIMEOUT:?} waiting for {what}: {last}; log {}:\n{}",
                process.log_path().display(),
                process.log_tail(LOG_LINES_ON_FAILURE)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cgroup_dir(hierarchy: &str, name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(plan::CGROUP_PARENT)
        .join(name)
}

/// The kubelet's cgroup root and the daemons' cgroup, in every hierarchy.
fn create_cgroups(plan: NodePlan) -> anyhow::Result<()> {
    for hierarchy in plan::CGROUP_HIERARCHIES {
        let parent = cgroup_dir(hierarchy, "");
        for name in [plan.scope(), plan.daemon_cgroup()] {
            let dir = cgroup_dir(hierarchy, &name);
            // Another slot's teardown may remove the shared parent in between.
            let mut attempt = 0;
            while let Err(error) = create_cgroup(hierarchy, &parent, &dir) {
                attempt += 1;
                if attempt >= 3 {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

fn create_cgroup(hierarchy: &str, parent: &Path, dir: &Path) -> anyhow::Result<()> {
    for path in [parent, dir] {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| format!("creating cgroup {}", path.display()));
            }
        }
        // A cpuset cgroup takes no task until it has CPUs and memory nodes.
        if hierarchy == "cpuset" {
            let above = path.parent().unwrap_or(Path::new("/sys/fs/cgroup/cpuset"));
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let current = std::fs::read_to_string(path.join(file)).unwrap_or_default();
                if current.trim().is_empty() {
                    let value = std::fs::read_to_string(above.join(file))
                        .with_context(|| format!("reading {}", above.join(file).display()))?;
                    std::fs::write(path.join(file), value.trim())
                        .with_context(|| format!("writing {}", path.join(file).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// The node's netns (veth into the hub, routes to the other nodes' pods,
/// forwarding on) and its mount namespace (private /run, /var/lib, /var/log;
/// the kubelet's sysctls shadowed).
fn build_node_namespaces(
    network: &RealNetwork,
    plan: NodePlan,
    paths: &NodePaths,
    net: &Path,
    mnt: &Path,
) -> anyhow::Result<()> {
    private_ns_dir(&paths.join("ns"))?;
    touch(net)?;
    run(
        "unshare",
        [format!("--net={}", net.display()), "true".into()],
    )?;
    let hub = network.hub_netns();
    let link = plan.hub_link();
    in_netns(
        &hub,
        "ip",
        &[
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.to_string_lossy(),
        ],
    )?;
    in_netns(&hub, "ip", &["link", "set", &link, "master", "br0", "up"])?;
    let mut script = format!(
        "set -e; ip link set lo up; ip addr add {}/24 dev eth0; ip link set eth0 up; \
         echo 1 > /proc/sys/net/ipv4/ip_forward; \
         echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true",
        plan.address()
    );
    // A route for ClusterIPs, so that local clients' packets reach
    // kube-proxy's DNAT; no default route: nothing leaves for other addresses.
    script.push_str(&format!(
        "; ip route add {} via {}",
        cidr(plan.slot.service_range()),
        plan.slot.root_address()
    ));
    for peer in plan.peers() {
        script.push_str(&format!(
            "; ip route add {} via {}",
            cidr(peer.pod_subnet()),
            peer.address()
        ));
    }
    in_netns(net, "sh", &["-c", &script])?;

    touch(mnt)?;
    run(
        "unshare",
        [
            format!("--mount={}", mnt.display()),
            "--propagation".into(),
            "slave".into(),
            "true".into(),
        ],
    )?;
    // Inside: drop the copies of other namespaces' files (they would keep
    // those namespaces alive as long as this one), then private dirs for what
    // containerd, runc, CNI and the kubelet write outside their configured dirs.
    let mut script = String::from(
        "set -e; awk '/ - nsfs / {print $5}' /proc/self/mountinfo | while read -r m; do umount -l \"$m\" || true; done; \
         mount -t tmpfs -o mode=0755 tmpfs /run; mkdir -m 0711 /run/containerd; \
         mount -t tmpfs -o mode=0755 tmpfs /var/lib; mount -t tmpfs -o mode=0755 tmpfs /var/log",
    );
    // The node's own resolv.conf (a nameserver on the root end, where nothing
    // answers): a pull of an image that was not imported fails at once
    // instead of asking the machine's resolver; with no default route in
    // the node's netns nothing could leave anyway.
    script.push_str(&format!(
        "; mount --bind '{}' /etc/resolv.conf",
        paths.join("resolv.conf").display()
    ));
    for (key, value) in SHADOWED_SYSCTLS {
        let file = paths.join(&format!("sysctl/{}", key.replace('/', "_")));
        std::fs::write(&file, format!("{value}\n"))?;
        script.push_str(&format!(
            "; mount --bind '{}' /proc/sys/{key}",
            file.display()
        ));
    }
    run(
        "nsenter",
        [
            format!("--mount={}", mnt.display()),
            "sh".into(),
            "-c".into(),
            script,
        ],
    )?;
    Ok(())
}

/// Starts `program` in the node's namespaces and daemon cgroup (pids and
/// freezer, so a sweep finds it and a fault can freeze the node).
#[allow(clippy::too_many_arguments)]
fn spawn_in_node(
    plan: NodePlan,
    bin: &Path,
    net: &Path,
    mnt: &Path,
    paths: &NodePaths,
    name: &str,
    program: PathBuf,
    args: Vec<String>,
) -> anyhow::Result<ManagedProcess> {
    let cgroups: Vec<String> = ["pids", "freezer"]
        .iter()
        .map(|h| {
            cgroup_dir(h, &plan.daemon_cgroup())
                .join("cgroup.procs")
                .display()
                .to_string()
        })
        .collect();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("for g in $JHRN_CGROUPS; do echo $$ > \"$g\"; done && exec \"$@\"")
        .arg("sh")
        .arg("nsenter")
        .arg(format!("--mount={}", mnt.display()))
        .arg(format!("--net={}", net.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .env("JHRN_CGROUPS", cgroups.join(" "))
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                bin.display()
            ),
        );
    ManagedProcess::spawn(command, paths.join(&format!("logs/{name}.log")))
}

/// Client certs of the kubelet (`system:node:<name>`) and kube-proxy, signed
/// by the control plane's CA, and their kubeconfigs.
async fn write_node_certs(
    plane: &ControlPlane,
    plan: NodePlan,
    paths: &NodePaths,
) -> anyhow::Result<()> {
    let ca_dir = plane.dir().join("certs");
    let ca_cert = ca_dir.join("ca.crt").display().to_string();
    let ca_key = ca_dir.join("ca.key").display().to_string();
    let openssl_config = ca_dir.join("openssl.cnf").display().to_string();
    let node_subject = format!("/O=system:nodes/CN=system:node:{}", plan.node_name());
    for (name, subject) in [
        ("kubelet", node_subject.as_str()),
        ("kube-proxy", "/CN=system:kube-proxy"),
    ] {
        let file = |ext: &str| {
            paths
                .join(&format!("certs/{name}.{ext}"))
                .display()
                .to_string()
        };
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &file("key"),
        ])
        .await?;
        openssl(&[
            "req",
            "-new",
            "-key",
            &file("key"),
            "-subj",
            subject,
            "-config",
            &openssl_config,
            "-out",
            &file("csr"),
        ])
        .await?;
        let serial = format!("0x{:016x}", rand::random::<u64>() >> 1);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &file("csr"),
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &openssl_config,
            "-extensions",
            "client",
            "-out",
            &file("crt"),
        ])
        .await?;
        std::fs::write(
            file("kubeconfig"),
            config::kubeconfig(
                &plane.api_server_url(),
                &plane.ca_cert_path(),
                Path::new(&file("crt")),
                Path::new(&file("key")),
            ),
        )?;
    }
    Ok(())
}

/// A network, a control plane on it and `nodes` real nodes with `images`
/// (names of `make images` archives). Drops nodes, then the control plane,
/// then the network.
pub struct RealCluster {
    pub nodes: Vec<RealNode>,
    pub plane: ControlPlane,
    pub network: RealNetwork,
}

impl RealCluster {
    pub async fn start(nodes: u8, images: &[&str]) -> anyhow::Result<Self> {
        let network = RealNetwork::create()?;
        let plane = ControlPlane::start_with(network.control_plane_options()).await?;
        let mut started = Vec::new();
        for index in 1..=nodes {
            started
                .push(RealNode::start(&plane, &network, NodeOptions::new(index, images)?).await?);
        }
        Ok(Self {
            nodes: started,
            plane,
            network,
        })
    }

    /// Everything the cluster's network and nodes may have created.
    pub fn footprint(&self) -> Footprint {
        self.network.footprint()
    }
}
