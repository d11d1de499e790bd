# joc-ha: one entry point for building, testing and linting.
#   make test   set up everything (packages, control plane) and run every test
#   make lint   clippy (-D warnings), rustfmt check, helm lint --strict
# Build outputs live outside the clone, keyed by version, so that a fresh
# clone on the same machine reuses them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

JOC_HA_CACHE ?= $(HOME)/.cache/joc-ha
export JOC_HA_CACHE
# cargo keys its artifacts by compiler version and flags itself.
export CARGO_TARGET_DIR ?= $(JOC_HA_CACHE)/target
# Each end-to-end test runs its own control plane and databases: two at a
# time is what two cores carry without flaking.
export RUST_TEST_THREADS ?= 2
export JOC_HA_CONTROLPLANE_BIN = $(shell scripts/controlplane.sh --print)
CARGO ?= cargo
# What the stack runs as processes, and only these are built (each binary's
# LTO takes minutes on 2 cores): the operator and sidecar as they ship
# (profile `dist`, see Cargo.toml; the stack picks them up through
# JOC_HA_BIN_DIR), and the stand-ins that play JOC Cockpit (release, crate
# tests/standins). The campaign and the benchmarks are crate tests/tools.
DIST_BINS = -p joc-ha-sidecar -p joc-ha-operator --bin joc-ha-sidecar --bin joc-ha-operator
STANDIN_BINS = -p joc-ha-standins --bin standin-cockpit --bin joc-standin
TOOLS = -p joc-ha-tools
# The demo and what its stack starts: no campaign, no benchmarks.
DEMO_BINS = -p joc-ha-demo -p joc-ha-operator -p joc-ha-sidecar -p joc-ha-standins \
  --bin demo --bin joc-ha-operator --bin joc-ha-sidecar --bin standin-cockpit --bin joc-standin
DIST_DIR = $(CARGO_TARGET_DIR)/dist

.PHONY: all setup controlplane realnode images images-check build crds test lint fmt bench bench-lease bench-js7 chaos chaos-js7 clean-cache demo plugin

all: build

setup:
	scripts/setup.sh

controlplane: setup
	scripts/controlplane.sh >/dev/null

# What a real node runs (kubelet, kube-proxy, containerd, CNI plugins, pause),
# cached like the control plane; tests/tests/realnode.rs starts real nodes.
realnode: setup
	scripts/realnode.sh >/dev/null

build:
	$(CARGO) build --workspace --all-targets

# Regenerates the CRD YAML from the Rust types, and the chart's copy (a test
# checks all three agree).
crds:
	$(CARGO) run --quiet -p joc-ha-crds --bin crdgen > crds/jocclusters.yaml
	cp crds/jocclusters.yaml charts/joc-ha/crds/jocclusters.yaml

# The end-to-end tests run the operator, sidecar and stand-in binaries as
# processes, so they are built first; the real-node tests run the images.
test: controlplane realnode images
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all --check
	@if [[ -f charts/joc-ha/Chart.yaml ]]; then \
	  scripts/controlplane.sh >/dev/null && "$$(scripts/controlplane.sh --print)/helm" lint --strict charts/joc-ha; \
	else echo "lint: no chart yet, helm lint skipped"; fi

fmt:
	$(CARGO) fmt --all

# The stack benchmark: fail-over, switch-over, resources, with a Kubernetes
# Lease baseline side by side (dist builds of what ships; ~35 min with the
# defaults).
# BENCH_ARGS: --runs N --baseline-runs N --backend postgres,mariadb
# --cases sigkill,sigstop,pod-delete,switchover,resources,operator
bench: controlplane
	$(CARGO) build --profile dist $(DIST_BINS)
	$(CARGO) build --release $(STANDIN_BINS) $(TOOLS) --bin baseline-labeler --bin bench-stack
	JOC_HA_BIN_DIR="$(DIST_DIR)" "$(CARGO_TARGET_DIR)/release/bench-stack" $(BENCH_ARGS)

bench-lease: controlplane
	$(CARGO) run --release $(TOOLS) --bin bench-lease -- $(BENCH_ARGS)

# Time from a fault to agreement of lease, label, Service and JOC's own
# active member (js7 mode), with the operator's and JOC's default timings.
# Debug binaries: the times are JOC's poll intervals, not CPU.
bench-js7: controlplane
	$(CARGO) build --workspace --bins
	"$(CARGO_TARGET_DIR)/debug/bench-js7" $(BENCH_ARGS)

# The fault campaign: at least 300 seeded random faults per backend
# (PostgreSQL, then MariaDB) on a 3-member cluster, with its checkers; reports
# in target/joc-ha-chaos/<backend>.json under this folder. CHAOS_ARGS, e.g.
# "--seed 7", "--backend mariadb", "--faults 50", "--max-minutes 20".
chaos: controlplane
	$(CARGO) build --profile dist $(DIST_BINS)
	$(CARGO) build --release $(STANDIN_BINS) $(TOOLS) --bin chaos
	JOC_HA_BIN_DIR="$(DIST_DIR)" "$(CARGO_TARGET_DIR)/release/chaos" $(CHAOS_ARGS)

# The js7 fault campaign: JOC stand-ins with the operator's timings, at least
# 100 faults per backend (freezes inside a JOC's service start included);
# reports in target/joc-ha-chaos/<backend>-js7.json. Two JOCs running services
# at once are counted; CHAOS_ARGS="--strict-services" makes them fail it.
chaos-js7: controlplane
	$(CARGO) build --profile dist $(DIST_BINS)
	$(CARGO) build --release $(STANDIN_BINS) $(TOOLS) --bin chaos
	JOC_HA_BIN_DIR="$(DIST_DIR)" "$(CARGO_TARGET_DIR)/release/chaos" --workload js7 $(CHAOS_ARGS)

# The images that ship, as OCI archives built offline (static musl binaries,
# profile dist) in $(CARGO_TARGET_DIR)/images; see scripts/images.sh.
images: setup
	scripts/images.sh

# Builds the images twice (the second time from a clean musl build) and
# checks that every digest is the same.
images-check: setup
	scripts/images.sh "$(CARGO_TARGET_DIR)/images" | awk '{print $$2, $$3}' > "$(CARGO_TARGET_DIR)/images.first"
	rm -rf "$(CARGO_TARGET_DIR)/x86_64-unknown-linux-musl/dist"
	scripts/images.sh "$(CARGO_TARGET_DIR)/images" | awk '{print $$2, $$3}' > "$(CARGO_TARGET_DIR)/images.second"
	diff "$(CARGO_TARGET_DIR)/images.first" "$(CARGO_TARGET_DIR)/images.second" && echo "images: reproducible" && cat "$(CARGO_TARGET_DIR)/images.second"

# The kubectl plugin (`kubectl joc ...`), into $(PREFIX)/bin.
PREFIX ?= $(HOME)/.local
plugin:
	$(CARGO) build --release -p kubectl-joc
	install -D -m 0755 "$(CARGO_TARGET_DIR)/release/kubectl-joc" "$(PREFIX)/bin/kubectl-joc"
	@echo "installed $(PREFIX)/bin/kubectl-joc; kubectl runs it as 'kubectl joc' when that folder is on PATH"

clean-cache:
	rm -rf "$(JOC_HA_CACHE)"

# The main job, locally: a 3-member JocCluster on the embedded SQLite store
# (DATABASE_URL=postgres://... or mysql://... to use a server), a switch-over
# and a fail-over with their times, then a live view until Ctrl-C.
# DEMO_ARGS=--once runs the scripted part only and exits 0 on success.
demo: controlplane
	$(CARGO) build $(DEMO_BINS)
	"$(CARGO_TARGET_DIR)/debug/demo" $(DEMO_ARGS)
