# Shared by scripts/controlplane.sh and scripts/realnode.sh: build Go commands
# from the wrapper modules under tests/, into a cache folder keyed by version.
# Source it after setting: repo (the clone), bin (the output folder).

export GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath"
export CGO_ENABLED=0

# The version a wrapper module pins: version_of <module dir> <module path>.
version_of() {
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' \
    "$repo/tests/$1/go.mod" | head -n 1
}

# build <module dir under tests/> <package> <output name> [extra ldflags]:
# skips what is already in $bin; writes atomically.
build() {
  local out=$bin/$3
  if [[ -x $out ]]; then
    echo "$(basename "$0" .sh): $3 cached ($key)" >&2
    return
  fi
  mkdir -p "$(dirname "$out")"
  echo "$(basename "$0" .sh): building $3 from $2 (first build takes minutes; Go's build cache is $(go env GOCACHE))" >&2
  local started=$SECONDS
  (cd "$repo/tests/$1" && go build -ldflags="-s -w ${4:-}" -o "$out.tmp" "$2")
  mv "$out.tmp" "$out"
  echo "$(basename "$0" .sh): built $3 in $((SECONDS - started)) s" >&2
}

# Without these the Kubernetes binaries report v0.0.0: kube_ldflags <version>.
kube_ldflags() {
  local minor=${1#v1.}
  minor=${minor%%.*}
  local flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$1 -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}
