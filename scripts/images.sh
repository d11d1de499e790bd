#!/usr/bin/env bash
# Builds the images that ship as OCI image archives, offline (no registry, no
# container engine): static musl binaries (cargo profile `dist`), one
# uncompressed layer each, owned by root, run as the non-root user 65532.
#
#   scripts/images.sh [OUT_DIR]     build, print one line per image with its digest
#   scripts/images.sh OUT_DIR NAME…  only those archives (e.g. standin-cockpit after a
#                                   change to a stand-in), built with only their package
#
# Images (tag = the chart's appVersion):
#   ghcr.io/joc-ha/joc-ha-operator   /usr/local/bin/joc-ha-operator
#   ghcr.io/joc-ha/joc-ha-sidecar    /usr/local/bin/joc-ha-sidecar
#   joc-ha.dev/joc-standin           the JOC stand-in (tests only)
#   joc-ha.dev/standin-cockpit       the generic stand-in cockpit (tests only)
#
# Reproducible: file order, owners, modes and times are fixed, and the config
# carries no build time, so the same sources give the same digests (checked
# by `make images-check`). Push one with e.g.
#   skopeo copy oci-archive:OUT_DIR/joc-ha-sidecar.oci.tar docker://REGISTRY/joc-ha-sidecar:TAG
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=${1:-$target_dir/images}
only=("${@:2}")
wanted() { [[ ${#only[@]} -eq 0 || " ${only[*]} " == *" $1 "* ]]; }
package_of() {
  case $1 in joc-ha-operator | joc-ha-sidecar) echo "$1" ;; *) echo joc-ha-standins ;; esac
}
triple=x86_64-unknown-linux-musl
tag=$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/joc-ha/Chart.yaml")

if ! rustup target list --installed | grep -qx "$triple"; then
  echo "images: adding the Rust target $triple" >&2
  rustup target add "$triple" >&2
fi
command -v musl-gcc >/dev/null || { echo "images: musl-gcc missing: run make setup" >&2; exit 1; }
command -v jq >/dev/null || { echo "images: jq missing: run make setup" >&2; exit 1; }

# SQLite is compiled in (bundled), so the C compiler must target musl too.
export CC_x86_64_unknown_linux_musl=musl-gcc
# Paths of this machine stay out of the binaries' panic messages.
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$repo=/src --remap-path-prefix=$HOME/.cargo=/cargo"
echo "images: building the static binaries (profile dist, $triple)" >&2
all_bins=(joc-ha-operator joc-ha-sidecar joc-standin standin-cockpit)
select=()
for bin in "${all_bins[@]}"; do
  if wanted "$bin"; then select+=(-p "$(package_of "$bin")" --bin "$bin"); fi
done
[[ ${#select[@]} -gt 0 ]] || { echo "images: no such image: ${only[*]} (known: ${all_bins[*]})" >&2; exit 1; }
(cd "$repo" && cargo build --locked --profile dist --target "$triple" "${select[@]}" >&2)
bins=$target_dir/$triple/dist

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }

# store <file> <layout>: moves the file into the layout's blobs under its
# digest and prints "<digest> <size>".
store() {
  local digest size
  digest=$(sha "$1")
  size=$(stat -c %s "$1")
  mv "$1" "$2/blobs/sha256/$digest"
  echo "$digest $size"
}

# image <archive name> <image name> <binary> <port>
image() {
  local archive=$1 name=$2 binary=$3 port=$4
  local root=$work/$archive/rootfs layout=$work/$archive/layout
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$layout/blobs/sha256"
  install -m 0755 "$bins/$binary" "$root/usr/local/bin/$binary"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
  chmod 1777 "$root/tmp"
  chmod 0755 "$root" "$root/usr" "$root/usr/local" "$root/usr/local/bin" "$root/etc"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$work/$archive/layer.tar" .
  local layer size
  read -r layer size < <(store "$work/$archive/layer.tar" "$layout")

  jq -cnS --arg layer "sha256:$layer" --arg bin "/usr/local/bin/$binary" --arg port "$port/tcp" \
    '{architecture: "amd64", os: "linux",
      config: {User: "65532:65532", Entrypoint: [$bin], Env: ["PATH=/usr/local/bin"],
               WorkingDir: "/", ExposedPorts: {($port): {}}},
      rootfs: {type: "layers", diff_ids: [$layer]},
      history: [{created_by: "joc-ha scripts/images.sh"}]}' >"$work/$archive/config.json"
  local config config_size
  read -r config config_size < <(store "$work/$archive/config.json" "$layout")

  jq -cnS --arg config "sha256:$config" --argjson config_size "$config_size" \
    --arg layer "sha256:$layer" --argjson size "$size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $config_size},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $layer, size: $size}]}' \
    >"$work/$archive/manifest.json"
  local manifest manifest_size
  read -r manifest manifest_size < <(store "$work/$archive/manifest.json" "$layout")

  jq -cnS --arg manifest "sha256:$manifest" --argjson size "$manifest_size" \
    --arg name "$name:$tag" --arg tag "$tag" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $manifest, size: $size,
                   platform: {architecture: "amd64", os: "linux"},
                   annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}}]}' \
    >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  find "$layout" -exec touch -h -d @0 {} +
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$layout" -cf "$out/$archive.oci.tar.tmp" oci-layout index.json blobs
  mv "$out/$archive.oci.tar.tmp" "$out/$archive.oci.tar"
  echo "$out/$archive.oci.tar $name:$tag sha256:$manifest"
}

wanted joc-ha-operator && image joc-ha-operator ghcr.io/joc-ha/joc-ha-operator joc-ha-operator 8080
wanted joc-ha-sidecar && image joc-ha-sidecar ghcr.io/joc-ha/joc-ha-sidecar joc-ha-sidecar 9086
wanted joc-standin && image joc-standin joc-ha.dev/joc-standin joc-standin 4446
wanted standin-cockpit && image standin-cockpit joc-ha.dev/standin-cockpit standin-cockpit 4446
:  # the last `wanted` may be false
