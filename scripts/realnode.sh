#!/usr/bin/env bash
# Builds what a real Kubernetes test node runs, next to the control plane and
# cached the same way (outside the clone, keyed by version): kubelet and
# kube-proxy (from the control plane's Kubernetes wrapper module), containerd
# with its runc shim and ctr, the CNI plugins bridge, host-local, loopback and
# portmap, and the static pause binary of the sandbox image. runc, nftables,
# iptables and conntrack come from Debian (scripts/setup.sh).
#
#   scripts/realnode.sh          build what is missing, print the bin dir
#   scripts/realnode.sh --print  print the bin dir only (no build)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${JOC_HA_CACHE:-$HOME/.cache/joc-ha}
source "$repo/scripts/gobuild.sh"

k8s=$(version_of controlplane/kubernetes k8s.io/kubernetes)
containerd=$(version_of realnode/containerd github.com/containerd/containerd/v2)
cni=$(version_of realnode/cni github.com/containernetworking/plugins)
pause_sum=$(sha256sum "$repo/tests/realnode/pause/pause.c" | cut -c1-12)
key="k8s-$k8s.containerd-$containerd.cni-$cni.pause-$pause_sum.$(go env GOVERSION)"
bin=$cache/realnode/$key/bin

if [[ ${1:-} == --print ]]; then
  echo "$bin"
  exit 0
fi

k8s_ldflags=$(kube_ldflags "$k8s")
build controlplane/kubernetes k8s.io/kubernetes/cmd/kubelet kubelet "$k8s_ldflags"
build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-proxy kube-proxy "$k8s_ldflags"
containerd_ldflags="-X github.com/containerd/containerd/v2/version.Version=$containerd -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
for command in containerd containerd-shim-runc-v2 ctr; do
  build realnode/containerd "github.com/containerd/containerd/v2/cmd/$command" "$command" "$containerd_ldflags"
done
for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
  build realnode/cni "github.com/containernetworking/plugins/plugins/$plugin" "cni/$(basename "$plugin")" \
    "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$cni"
done
if [[ ! -x $bin/pause ]]; then
  gcc -static -Os -s -o "$bin/pause.tmp" "$repo/tests/realnode/pause/pause.c"
  mv "$bin/pause.tmp" "$bin/pause"
  echo "realnode: built pause" >&2
fi
echo "$bin"
