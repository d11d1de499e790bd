#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine of this
# kind (as root), or says exactly what is missing (as another user).
# Idempotent: a second run installs nothing.
set -euo pipefail

missing_packages=()
need_package() { # command or file, Debian package
  if ! command -v "$1" >/dev/null 2>&1 && [[ ! -e $1 ]]; then
    missing_packages+=("$2")
  fi
}

# PostgreSQL keeps its binaries outside PATH; any installed major version will do.
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  missing_packages+=(postgresql)
fi
need_package /usr/sbin/mariadbd mariadb-server
need_package mariadb-install-db mariadb-server
need_package faketime faketime
need_package openssl openssl
# A real test node (scripts/realnode.sh builds the rest): the OCI runtime, the
# tools kube-proxy runs, and a static C toolchain for the pause binary.
need_package runc runc
need_package nft nftables
need_package iptables iptables
need_package conntrack conntrack
# The real-node tests' client sends its requests with curl from inside a node.
need_package curl curl
need_package gcc gcc
need_package /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
# make images: static musl binaries packed as OCI archives.
need_package musl-gcc musl-tools
need_package jq jq

missing_tools=()
for tool in go cargo rustc; do
  command -v "$tool" >/dev/null 2>&1 || missing_tools+=("$tool")
done
if ((${#missing_tools[@]})); then
  echo "setup: missing toolchains: ${missing_tools[*]} (Go >= 1.26 and Rust >= 1.94 are needed)" >&2
  exit 1
fi
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  echo "setup: missing cargo components: run 'rustup component add clippy rustfmt'" >&2
  exit 1
fi

if ((${#missing_packages[@]})); then
  # De-duplicate while keeping order.
  mapfile -t missing_packages < <(printf '%s\n' "${missing_packages[@]}" | awk '!seen[$0]++')
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing_packages[*]}" >&2
    echo "setup: install them with: sudo apt-get install -y ${missing_packages[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing_packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postinst would start services through policy-rc.d; the tests
  # start private servers themselves, so none is wanted.
  apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi
echo "setup: all prerequisites present" >&2
