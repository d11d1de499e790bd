//go:build tools

// Package tools pins the container runtime a real test node runs: containerd,
// its runc shim and ctr (scripts/realnode.sh builds them).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
