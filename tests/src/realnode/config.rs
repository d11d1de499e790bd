//! The configuration files of one node (docs/real-node.md, "Exact
//! configuration that worked"), rendered from its plan: pure.

use std::path::Path;

use super::plan::{NodePlan, cidr};

/// The sandbox image every pod's pause container runs (built by `image.rs`).
pub const PAUSE_IMAGE: &str = "joc-ha.dev/realnode-pause:1";

/// Paths of a node's state, all below its own temp dir.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub root: std::path::PathBuf,
}

impl NodePaths {
    pub fn join(&self, sub: &str) -> std::path::PathBuf {
        self.root.join(sub)
    }

    pub fn containerd_socket(&self) -> std::path::PathBuf {
        self.join("containerd/containerd.sock")
    }
}

fn quote(path: &Path) -> String {
    // A JSON string is a valid TOML basic string and a valid YAML scalar.
    serde_json::Value::String(path.to_string_lossy().into_owned()).to_string()
}

pub fn containerd_toml(paths: &NodePaths, bin_dir: &Path) -> String {
    format!(
        r#"version = 3
root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # Pod netns below our state dir, not in the machine's /run/netns.
  netns_mounts_under_state_dir = true
  # This machine withholds CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998
  # makes runc fail, so clamp it (docs/real-node.md, problem 1).
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{cni_bin}]
    conf_dir = {cni_conf}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root = quote(&paths.join("containerd/root")),
        state = quote(&paths.join("containerd/state")),
        socket = quote(&paths.containerd_socket()),
        ttrpc = quote(&paths.join("containerd/containerd.sock.ttrpc")),
        cni_bin = quote(&bin_dir.join("cni")),
        cni_conf = quote(&paths.join("cni/net.d")),
    )
}

pub fn kubelet_yaml(plan: NodePlan, paths: &NodePaths, ca: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only.
failCgroupV1: false
cgroupDriver: cgroupfs
# Our own subtree: the kubelet creates kubepods/… below it and nothing elsewhere.
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://{socket}
address: {address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
podLogsDir: {pod_logs}
volumePluginDir: {plugins}
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
evictionHard: {{"memory.available": "100Mi"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
resolvConf: {resolv}
clusterDomain: cluster.local
localStorageCapacityIsolation: true
"#,
        cgroup_root = plan.cgroup_root(),
        socket = paths.containerd_socket().display(),
        address = plan.address(),
        ca = quote(ca),
        pod_logs = quote(&paths.join("pod-logs")),
        plugins = quote(&paths.join("kubelet-plugins")),
        resolv = quote(&paths.join("resolv.conf")),
    )
}

pub fn cni_conflist(plan: NodePlan, paths: &NodePaths) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "realnode",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": paths.join("cni/ipam"),
                    "ranges": [[{
                        "subnet": cidr(plan.pod_subnet()),
                        "gateway": plan.pod_gateway().to_string(),
                    }]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

pub fn kube_proxy_yaml(plan: NodePlan, kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: nftables
hostnameOverride: {name}
bindAddress: {address}
clusterCIDR: {cluster}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero: leave the machine-wide conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = quote(kubeconfig),
        name = plan.node_name(),
        address = plan.address(),
        // One CIDR only: the slot's block holds every node's pod subnet.
        cluster = cidr(plan.slot.block()),
    )
}

/// No cluster DNS runs (docs/real-node.md, problem 4): pods use the
/// `*_SERVICE_HOST` variables; this file only keeps the machine's out.
pub fn resolv_conf(plan: NodePlan) -> String {
    format!("nameserver {}\n", plan.slot.root_address())
}

/// A kubeconfig with a client certificate.
pub fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: realnode
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: default
  context: {{cluster: realnode, user: user}}
current-context: default
",
        ca = quote(ca),
        cert = quote(cert),
        key = quote(key),
    )
}

#[cfg(test)]
mod tests {
    use super::super::plan::Slot;
    use super::*;

    fn node() -> (NodePlan, NodePaths) {
        let plan = Slot::new(2).and_then(|s| s.node(3)).expect("plan");
        let paths = NodePaths {
            root: "/tmp/joc-ha-rn-x".into(),
        };
        (plan, paths)
    }

    #[test]
    fn the_kubelet_stays_in_our_cgroup_and_on_its_address() {
        let (plan, paths) = node();
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&kubelet_yaml(plan, &paths, Path::new("/ca.crt"))).expect("yaml");
        assert_eq!(yaml["cgroupRoot"], "/realnode/jhrn2-n3");
        assert_eq!(yaml["failCgroupV1"], false);
        assert_eq!(yaml["address"], "198.18.8.13");
        assert_eq!(
            yaml["containerRuntimeEndpoint"],
            "unix:///tmp/joc-ha-rn-x/containerd/containerd.sock"
        );
        assert_eq!(yaml["authentication"]["anonymous"]["enabled"], false);
    }

    #[test]
    fn containerd_clamps_oom_scores_and_keeps_netns_in_its_state() {
        let (_, paths) = node();
        let toml = containerd_toml(&paths, Path::new("/bin-dir"));
        assert!(toml.contains("restrict_oom_score_adj = true"));
        assert!(toml.contains("netns_mounts_under_state_dir = true"));
        assert!(toml.contains(r#"bin_dirs = ["/bin-dir/cni"]"#));
        assert!(toml.contains(PAUSE_IMAGE));
    }

    #[test]
    fn the_cni_range_and_kube_proxy_cluster_cidrs_follow_the_plan() {
        let (plan, paths) = node();
        let cni: serde_json::Value =
            serde_json::from_str(&cni_conflist(plan, &paths)).expect("json");
        let range = &cni["plugins"][0]["ipam"]["ranges"][0][0];
        assert_eq!(range["subnet"], "198.18.11.0/24");
        assert_eq!(range["gateway"], "198.18.11.1");
        let proxy: serde_yaml::Value =
            serde_yaml::from_str(&kube_proxy_yaml(plan, Path::new("/kp"))).expect("yaml");
        assert_eq!(proxy["mode"], "nftables");
        assert_eq!(proxy["clusterCIDR"], "198.18.8.0/22");
        assert_eq!(proxy["conntrack"]["maxPerCore"], 0);
    }
}
