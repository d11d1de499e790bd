//go:build tools

// Package tools pins the CNI plugins a real test node uses (bridge with
// host-local IPAM, loopback, portmap; scripts/realnode.sh builds them).
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
