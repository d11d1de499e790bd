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
modules=$repo/tests/controlplane

version_of() { # module dir, required module path
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' \
    "$modules/$1/go.mod" | head -n 1
}
k8s=$(version_of kubernetes k8s.io/kubernetes)
etcd=$(version_of etcd go.etcd.io/etcd/server/v3)
helm=$(version_of helm helm.sh/helm/v3)
go_version=$(go env GOVERSION)
key="k8s-$k8s.etcd-$etcd.helm-$helm.$go_version"
bin=$cache/controlplane/$key/bin

if [[ ${1:-} == --print ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath"
export CGO_ENABLED=0

build() { # module dir, package, output name, extra ldflags
  local out=$bin/$3
  if [[ -x $out ]]; then
    echo "controlplane: $3 cached ($key)" >&2
    return
  fi
  echo "controlplane: building $3 from $2 (first build takes minutes; Go's build cache is $(go env GOCACHE))" >&2
  local started=$SECONDS
  (cd "$modules/$1" && go build -ldflags="-s -w ${4:-}" -o "$out.tmp" "$2")
  mv "$out.tmp" "$out"
  echo "controlplane: built $3 in $((SECONDS - started)) s" >&2
}

# Without these the binaries report v0.0.0, which kubectl and helm warn about.
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor=${k8s#v1.}; minor=${minor%%.*}
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

build etcd go.etcd.io/etcd/server/v3 etcd
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_ldflags"
build helm helm.sh/helm/v3/cmd/helm helm "-X helm.sh/helm/v3/internal/version.version=$helm"
echo "$bin"
