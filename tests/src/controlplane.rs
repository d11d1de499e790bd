//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC,
//! service-account tokens) and kube-controller-manager, in a temp dir, with free
//! ports. No kubelet and no scheduler: see [`crate::kubelet`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tempfile::TempDir;

use crate::process::{ManagedProcess, describe_exit, log_tail};
use crate::wait::{http_get_status, wait_for_ok};

/// Lines of each log printed when a test panics.
const LOG_LINES_ON_FAILURE: usize = 40;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
// The apiserver lingers ~15 s after SIGTERM; a crash-like stop is what tests need.
const APISERVER_STOP_GRACE: Duration = Duration::from_secs(3);
/// Longest token the apiserver will issue; tests never need to refresh one.
const MAX_TOKEN_EXPIRATION: &str = "48h";
const TOKEN_SECONDS: i64 = 24 * 3600;
/// Set to keep the temp dir (certs, data, logs) even when no test panicked.
const KEEP_ENV: &str = "JOC_HA_KEEP_TMP";

const NOT_BUILT: &str =
    "control plane not built: run `make controlplane` (scripts/controlplane.sh)";

/// How to start a [`ControlPlane`]; the default is the loopback one every test uses.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// Bind and advertise the apiserver on this address of ours (real nodes:
    /// the root end of their network, see [`crate::realnode`]) instead of
    /// 127.0.0.1. The `kubernetes` Service then gets this endpoint, the
    /// apiserver reaches kubelets by their InternalIP with a client cert of
    /// its own, and a kube-scheduler runs too (real kubelets wait for one).
    pub bind_address: Option<Ipv4Addr>,
    /// The Service cluster IP range (network address, prefix length) instead
    /// of the data-only default; its first address is in the serving cert.
    pub service_range: Option<(Ipv4Addr, u8)>,
}

/// etcd + kube-apiserver + kube-controller-manager. Everything is killed on drop;
/// after a panic the temp dir is kept and the log tails are printed.
// Fields drop in order: processes (clients of etcd first), then the temp dir.
pub struct ControlPlane {
    scheduler: Option<ManagedProcess>,
    controller_manager: ManagedProcess,
    /// `None` while stopped by [`ControlPlane::stop_apiserver`].
    apiserver: Mutex<Option<Arc<ManagedProcess>>>,
    etcd: ManagedProcess,
    client: Client,
    root: PathBuf,
    bin_dir: PathBuf,
    api_port: u16,
    api_address: Ipv4Addr,
    service_range: String,
    apiserver_args: Vec<String>,
    kubeconfig_counter: AtomicU32,
    dir: Option<TempDir>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("root", &self.root)
            .field("api_port", &self.api_port)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts a fresh control plane and waits until the apiserver is ready and
    /// the controller-manager is working.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// [`ControlPlane::start`] with non-default options.
    pub async fn start_with(options: ControlPlaneOptions) -> anyhow::Result<Self> {
        let bin_dir = locate_bin_dir()?;
        for binary in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            if !bin_dir.join(binary).is_file() {
                bail!("{NOT_BUILT}; {} is missing", bin_dir.join(binary).display());
            }
        }
        // Free ports are picked by binding and releasing them; another process can
        // take one in between, so a start that hit "address already in use" retries.
        let mut attempt = 1;
        loop {
            match Self::start_once(&bin_dir, &options).await {
                Ok(plane) => return Ok(plane),
                Err(error)
                    if attempt < 3 && format!("{error:#}").contains("address already in use") =>
                {
                    eprintln!("joc-ha-tests: control plane port clash, retrying: {error:#}");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn start_once(bin_dir: &Path, options: &ControlPlaneOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("joc-ha-cp-")
            .tempdir()
            .context("creating temp dir")?;
        let root = dir.path().to_path_buf();
        // Kept on failure too: the logs explain why it did not come up.
        let mut guard = StartupGuard { dir: Some(dir) };
        for sub in ["certs", "etcd", "logs", "home", "kubeconfigs", "apiserver"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // etcd wants its data dir private.
        std::fs::set_permissions(root.join("etcd"), std::fs::Permissions::from_mode(0o700))?;
        let api_address = options.bind_address.unwrap_or(Ipv4Addr::LOCALHOST);
        let (service_network, service_prefix) = options
            .service_range
            // Data only, unless real nodes route it.
            .unwrap_or((Ipv4Addr::new(10, 0, 0, 0), 20));
        let service_range = format!("{service_network}/{service_prefix}");
        let kubernetes_service_ip = Ipv4Addr::from(u32::from(service_network) + 1);
        generate_certificates(
            &root.join("certs"),
            &[api_address, kubernetes_service_ip],
            options.bind_address.is_some(),
        )
        .await?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port_on(api_address)?;

        let etcd = ManagedProcess::start(
            bin_dir.join("etcd"),
            [
                "--name=joc-ha-test".to_owned(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=joc-ha-test=http://127.0.0.1:{etcd_peer_port}"),
                // Test data: durability is not worth the fsync latency on a shared disk.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            root.join("logs/etcd.log"),
        )?;
        wait_for_process_ready(&etcd, "etcd /health", || async {
            match http_get_status(
                &format!("http://127.0.0.1:{etcd_port}/health"),
                Duration::from_secs(2),
            )
            .await
            {
                Ok(200) => Ok(()),
                Ok(status) => Err(format!("status {status}")),
                Err(error) => Err(format!("{error:#}")),
            }
        })
        .await?;

        let certs = root.join("certs");
        let mut apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--bind-address={api_address}"),
            format!("--secure-port={api_port}"),
            format!("--advertise-address={api_address}"),
            format!("--cert-dir={}", root.join("apiserver").display()),
            format!("--tls-cert-file={}", certs.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                certs.join("apiserver.key").display()
            ),
            format!("--client-ca-file={}", certs.join("ca.crt").display()),
            "--authorization-mode=Node,RBAC".to_owned(),
            format!("--service-cluster-ip-range={service_range}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!(
                "--service-account-key-file={}",
                certs.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                certs.join("sa.key").display()
            ),
            format!("--service-account-max-token-expiration={MAX_TOKEN_EXPIRATION}"),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
        ];
        if options.bind_address.is_some() {
            // Real kubelets serve logs/exec on their InternalIP and want a client cert.
            apiserver_args.extend([
                format!(
                    "--kubelet-client-certificate={}",
                    certs.join("apiserver-kubelet-client.crt").display()
                ),
                format!(
                    "--kubelet-client-key={}",
                    certs.join("apiserver-kubelet-client.key").display()
                ),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ]);
        } else {
            // The `kubernetes` Service's endpoint reconciler rejects loopback addresses.
            apiserver_args.push("--endpoint-reconciler-type=none".to_owned());
        }
        let apiserver = Arc::new(spawn_apiserver(bin_dir, &root, &apiserver_args)?);

        let admin_kubeconfig = root.join("kubeconfigs/admin.yaml");
        std::fs::write(
            &admin_kubeconfig,
            admin_kubeconfig_yaml(&root, api_address, api_port),
        )?;
        let client = client_from_kubeconfig_file(&admin_kubeconfig).await?;
        wait_apiserver_ready(&apiserver, &client).await?;
        let apiserver_ready = started.elapsed();

        let controller_manager = ManagedProcess::start(
            bin_dir.join("kube-controller-manager"),
            [
                format!("--kubeconfig={}", admin_kubeconfig.display()),
                "--leader-elect=false".to_owned(),
                "--controllers=*".to_owned(),
                "--secure-port=0".to_owned(),
                format!(
                    "--service-account-private-key-file={}",
                    certs.join("sa.key").display()
                ),
                format!("--root-ca-file={}", certs.join("ca.crt").display()),
                format!("--service-cluster-ip-range={service_range}"),
            ],
            root.join("logs/kube-controller-manager.log"),
        )?;
        let scheduler = match options.bind_address {
            Some(_) => Some(ManagedProcess::start(
                bin_dir.join("kube-scheduler"),
                [
                    format!("--kubeconfig={}", admin_kubeconfig.display()),
                    "--leader-elect=false".to_owned(),
                    "--secure-port=0".to_owned(),
                ],
                root.join("logs/kube-scheduler.log"),
            )?),
            None => None,
        };
        // The serviceaccount controller creating `default` proves the manager runs.
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        wait_for_process_ready(
            &controller_manager,
            "the controller-manager to create ServiceAccount default/default",
            || async {
                match service_accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not there yet".to_owned()),
                    Err(error) => Err(error.to_string()),
                }
            },
        )
        .await?;
        eprintln!(
            "joc-ha-tests: control plane up in {:.1?} (apiserver ready after {apiserver_ready:.1?}) at https://{api_address}:{api_port}, dir {}",
            started.elapsed(),
            root.display()
        );

        Ok(Self {
            dir: guard.dir.take(),
            root,
            bin_dir: bin_dir.to_path_buf(),
            api_port,
            api_address,
            service_range,
            apiserver_args,
            etcd,
            apiserver: Mutex::new(Some(apiserver)),
            controller_manager,
            scheduler,
            client,
            kubeconfig_counter: AtomicU32::new(0),
        })
    }

    /// An admin (`system:masters`) client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn api_server_url(&self) -> String {
        format!("https://{}:{}", self.api_address, self.api_port)
    }

    /// The address the apiserver binds (127.0.0.1 unless [`ControlPlaneOptions::bind_address`]).
    pub fn api_address(&self) -> Ipv4Addr {
        self.api_address
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The Service cluster IP range, `network/prefix`.
    pub fn service_range(&self) -> &str {
        &self.service_range
    }

    /// The CA that signed the apiserver's serving certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join("certs/ca.crt")
    }

    /// Kubeconfig of the admin identity (client certificate in `system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.root.join("kubeconfigs/admin.yaml")
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The temp dir holding certs, etcd data, logs and kubeconfigs.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Mints a token for a ServiceAccount (TokenRequest API, valid 24 h).
    pub async fn token_for(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!("TokenRequest for ServiceAccount {namespace}/{service_account}")
            })?;
        let status = response
            .status
            .context("TokenRequest answered without status")?;
        status
            .token
            .context("TokenRequest answered without a token")
    }

    /// A client that authenticates with `token` only (no admin rights).
    pub async fn client_for_token(&self, token: &str) -> anyhow::Result<Client> {
        let yaml = self.token_kubeconfig_yaml(&format!("token: {}", yaml_string(token)));
        client_from_kubeconfig(Kubeconfig::from_yaml(&yaml)?).await
    }

    /// Writes a kubeconfig using `token` and returns its path.
    pub fn kubeconfig_for_token(&self, token: &str) -> anyhow::Result<PathBuf> {
        self.write_kubeconfig(&format!("token: {}", yaml_string(token)))
    }

    /// Writes a kubeconfig that reads its token from `token_file` on every use
    /// (so a rotated file is picked up) and returns its path.
    pub fn kubeconfig_for_token_file(&self, token_file: &Path) -> anyhow::Result<PathBuf> {
        self.write_kubeconfig(&format!(
            "tokenFile: {}",
            yaml_string(&token_file.to_string_lossy())
        ))
    }

    fn write_kubeconfig(&self, user_line: &str) -> anyhow::Result<PathBuf> {
        let n = self.kubeconfig_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(format!("kubeconfigs/token-{n}.yaml"));
        std::fs::write(&path, self.token_kubeconfig_yaml(user_line))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn token_kubeconfig_yaml(&self, user_line: &str) -> String {
        kubeconfig_yaml(&self.api_server_url(), &self.ca_cert_path(), user_line)
    }

    /// Creates a namespace and waits for its `default` ServiceAccount, without
    /// which pods in it are rejected.
    pub async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let service_accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        wait_for_ok(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                match service_accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not created yet".to_owned()),
                    Err(error) => Err(error.to_string()),
                }
            },
        )
        .await
    }

    /// The running apiserver process (for freezing it), `None` while stopped.
    pub fn apiserver_process(&self) -> Option<Arc<ManagedProcess>> {
        lock(&self.apiserver).clone()
    }

    pub fn etcd_process(&self) -> &ManagedProcess {
        &self.etcd
    }

    pub fn controller_manager_process(&self) -> &ManagedProcess {
        &self.controller_manager
    }

    /// SIGTERM the apiserver (SIGKILL after 3 s) and leave it down.
    pub async fn stop_apiserver(&self) -> anyhow::Result<()> {
        let process = lock(&self.apiserver).take();
        if let Some(process) = process {
            // A frozen apiserver never sees SIGTERM; thaw it so it can shut down.
            process.thaw()?;
            process.terminate(APISERVER_STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Starts the apiserver again on the same port and waits until it is ready.
    pub async fn start_apiserver(&self) -> anyhow::Result<()> {
        if lock(&self.apiserver)
            .as_ref()
            .is_some_and(|p| p.is_running())
        {
            bail!("the apiserver is already running");
        }
        let process = Arc::new(spawn_apiserver(
            &self.bin_dir,
            &self.root,
            &self.apiserver_args,
        )?);
        *lock(&self.apiserver) = Some(Arc::clone(&process));
        wait_apiserver_ready(&process, &self.client).await
    }

    /// Stops and starts the apiserver (same port, same etcd, same certs).
    pub async fn restart_apiserver(&self) -> anyhow::Result<()> {
        self.stop_apiserver().await?;
        self.start_apiserver().await
    }

    /// Runs the built kubectl as admin. Its caches live in the temp dir.
    pub async fn kubectl<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_tool("kubectl", args).await
    }

    /// Runs the built helm as admin. Its config, cache and data live in the temp dir.
    pub async fn helm<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_tool("helm", args).await
    }

    async fn run_tool<I, S>(&self, tool: &str, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = self.bin_dir.join(tool);
        if !program.is_file() {
            bail!("{NOT_BUILT}; {} is missing", program.display());
        }
        let home = self.root.join("home");
        let mut command = tokio::process::Command::new(&program);
        command
            .args(args)
            .env("KUBECONFIG", self.kubeconfig_path())
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join(".kube/cache"))
            .env("HELM_CACHE_HOME", home.join(".cache/helm"))
            .env("HELM_CONFIG_HOME", home.join(".config/helm"))
            .env("HELM_DATA_HOME", home.join(".local/share/helm"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(300), command.output())
            .await
            .with_context(|| format!("{tool} did not finish within 300 s"))?
            .with_context(|| format!("running {}", program.display()))?;
        Ok(output)
    }

    fn print_logs(&self) {
        let logs = self.log_dir();
        eprintln!(
            "joc-ha-tests: control plane dir kept at {}",
            self.root.display()
        );
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            let path = logs.join(format!("{name}.log"));
            eprintln!(
                "---- last {LOG_LINES_ON_FAILURE} lines of {} ----\n{}",
                path.display(),
                log_tail(&path, LOG_LINES_ON_FAILURE)
            );
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Fields drop after this body: ManagedProcess kills each process group.
        let failed = std::thread::panicking();
        if failed {
            self.print_logs();
        }
        if (failed || std::env::var_os(KEEP_ENV).is_some())
            && let Some(dir) = self.dir.take()
        {
            let _ = dir.keep();
        }
        // Kill all before any is reaped, so none spends its last moments retrying another.
        if let Some(scheduler) = &self.scheduler {
            let _ = scheduler.signal(nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self
            .controller_manager
            .signal(nix::sys::signal::Signal::SIGKILL);
        if let Some(process) = lock(&self.apiserver).as_ref() {
            let _ = process.signal(nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.etcd.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Keeps the temp dir and prints logs when startup fails or panics half-way.
struct StartupGuard {
    dir: Option<TempDir>,
}

impl Drop for StartupGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            eprintln!(
                "joc-ha-tests: control plane failed to start; its dir is kept at {}",
                path.display()
            );
            for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
                let log = path.join(format!("logs/{name}.log"));
                if log.exists() {
                    eprintln!(
                        "---- last {LOG_LINES_ON_FAILURE} lines of {} ----\n{}",
                        log.display(),
                        log_tail(&log, LOG_LINES_ON_FAILURE)
                    );
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not make teardown panic too.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `JOC_HA_CONTROLPLANE_BIN`, else what `scripts/controlplane.sh --print` says.
pub fn locate_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JOC_HA_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/controlplane.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg("--print")
        .output()
        .with_context(|| format!("{NOT_BUILT}; cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{NOT_BUILT}; {} --print failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if dir.is_empty() {
        bail!("{NOT_BUILT}; {} --print printed nothing", script.display());
    }
    Ok(PathBuf::from(dir))
}

fn free_port() -> anyhow::Result<u16> {
    free_port_on(Ipv4Addr::LOCALHOST)
}

fn free_port_on(address: Ipv4Addr) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((address, 0))
        .with_context(|| format!("binding a free port on {address}"))?;
    Ok(listener.local_addr()?.port())
}

fn spawn_apiserver(bin_dir: &Path, root: &Path, args: &[String]) -> anyhow::Result<ManagedProcess> {
    ManagedProcess::start(
        bin_dir.join("kube-apiserver"),
        args,
        root.join("logs/kube-apiserver.log"),
    )
}

async fn wait_apiserver_ready(apiserver: &ManagedProcess, client: &Client) -> anyhow::Result<()> {
    wait_for_process_ready(apiserver, "kube-apiserver /readyz", || async {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => Ok(()),
            Ok(body) => Err(body),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
}

/// Waits for `check`, failing at once with the log tail if `process` exits.
async fn wait_for_process_ready<F, Fut>(
    process: &ManagedProcess,
    what: &str,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
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
        let last = match tokio::time::timeout(Duration::from_secs(5), check()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(observation)) => observation,
            Err(_) => "check timed out after 5 s".to_owned(),
        };
        if Instant::now() > deadline {
            bail!(
                "timed out after {STARTUP_TIMEOUT:?} waiting for {what}; last observation: {last}; log {}:\n{}",
                process.log_path().display(),
                process.log_tail(LOG_LINES_ON_FAILURE)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client_from_kubeconfig_file(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    client_from_kubeconfig(kubeconfig).await
}

async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> anyhow::Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building client config")?;
    Client::try_from(config).context("building client")
}

fn admin_kubeconfig_yaml(root: &Path, api_address: Ipv4Addr, api_port: u16) -> String {
    let certs = root.join("certs");
    let user = format!(
        "client-certificate: {}\n    client-key: {}",
        yaml_string(&certs.join("admin.crt").to_string_lossy()),
        yaml_string(&certs.join("admin.key").to_string_lossy())
    );
    kubeconfig_yaml(
        &format!("https://{api_address}:{api_port}"),
        &certs.join("ca.crt"),
        &user,
    )
}

fn kubeconfig_yaml(server: &str, ca: &Path, user_lines: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: joc-ha-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: user
  user:
    {user_lines}
contexts:
- name: joc-ha-test
  context:
    cluster: joc-ha-test
    user: user
    namespace: default
current-context: joc-ha-test
",
        ca = yaml_string(&ca.to_string_lossy())
    )
}

/// A JSON string is a valid YAML scalar, quoted and escaped.
fn yaml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

const OPENSSL_CONFIG: &str = "
[req]
distinguished_name = dn
prompt = no
[dn]
CN = joc-ha-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = @alt_names
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

/// A CA, the apiserver's serving cert (for `server_ips` too), the admin client
/// cert (`system:masters`), with `kubelet_client` the apiserver's client cert
/// for kubelets, and the service-account signing key pair, all ECDSA P-256,
/// via the openssl CLI.
async fn generate_certificates(
    dir: &Path,
    server_ips: &[Ipv4Addr],
    kubelet_client: bool,
) -> anyhow::Result<()> {
    let config = dir.join("openssl.cnf");
    let mut alt_names = String::from(
        "[alt_names]\nIP.0 = 127.0.0.1\nDNS.0 = localhost\nDNS.1 = kubernetes\nDNS.2 = kubernetes.default\nDNS.3 = kubernetes.default.svc\nDNS.4 = kubernetes.default.svc.cluster.local\n",
    );
    for (n, ip) in server_ips.iter().enumerate() {
        alt_names.push_str(&format!("IP.{} = {ip}\n", n + 1));
    }
    std::fs::write(&config, format!("{OPENSSL_CONFIG}{alt_names}"))?;
    let config = config.to_string_lossy().into_owned();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut keys = vec!["ca.key", "apiserver.key", "admin.key", "sa.key"];
    if kubelet_client {
        keys.push("apiserver-kubelet-client.key");
    }
    for key in keys {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &path(key),
        ])
        .await?;
    }
    openssl(&[
        "pkey",
        "-in",
        &path("sa.key"),
        "-pubout",
        "-out",
        &path("sa.pub"),
    ])
    .await?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &path("ca.key"),
        "-subj",
        "/CN=joc-ha-test-ca",
        "-days",
        "3650",
        "-config",
        &config,
        "-extensions",
        "ca",
        "-out",
        &path("ca.crt"),
    ])
    .await?;
    let mut signed = vec![
        ("apiserver", "/CN=kube-apiserver", "server"),
        ("admin", "/O=system:masters/CN=joc-ha-admin", "client"),
    ];
    if kubelet_client {
        signed.push((
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "client",
        ));
    }
    for (name, subject, extensions) in signed {
        let csr = path(&format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-key",
            &path(&format!("{name}.key")),
            "-subj",
            subject,
            "-config",
            &config,
            "-out",
            &csr,
        ])
        .await?;
        let serial = format!("0x{:016x}", rand::random::<u64>() >> 1);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
            "-set_serial",
            &serial,
            "-days",
            "3650",
            "-extfile",
            &config,
            "-extensions",
            extensions,
            "-out",
            &path(&format!("{name}.crt")),
        ])
        .await?;
    }
    Ok(())
}

pub(crate) async fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running openssl (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
