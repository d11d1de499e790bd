#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm) from the Go module proxy into a cache outside
# the clone, keyed by version, and reuses it on the next run.
#
#   scripts/controlplane.sh          build what is missing, print the bin dir
#   scripts/controlplane.sh --print  print the bin dir only (no build)
#
# The versions are the ones pinned in tests/controlplane/*/go.mod.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${JOC_HA_CACHE:-$HOME/.cache/joc-ha}
source "$repo/scripts/gobuild.sh"

k8s=$(version_of controlplane/kubernetes k8s.io/kubernetes)
etcd=$(version_of controlplane/etcd go.etcd.io/etcd/server/v3)
helm=$(version_of controlplane/helm helm.sh/helm/v3)
key="k8s-$k8s.etcd-$etcd.helm-$helm.$(go env GOVERSION)"
bin=$cache/controlplane/$key/bin

if [[ ${1:-} == --print ]]; then
  echo "$bin"
  exit 0
fi

k8s_ldflags=$(kube_ldflags "$k8s")
build controlplane/etcd go.etcd.io/etcd/server/v3 etcd
build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_ldflags"
build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_ldflags"
build controlplane/kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_ldflags"
build controlplane/kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_ldflags"
build controlplane/helm helm.sh/helm/v3/cmd/helm helm "-X helm.sh/helm/v3/internal/version.version=$helm"
echo "$bin"
