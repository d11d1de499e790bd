//! The address and name plan of real nodes: pure, so it is tested as a table.
//!
//! Every environment (one control plane with its nodes) holds a slot `k` in
//! 1..=63, claimed by a directory under [`SLOT_DIR`]. Everything it creates is
//! named after the slot (`jhrn<k>`, `jhrn<k>-hub`, `jhrn<k>-n<i>`) and every
//! address is inside 198.18.0.0/15 (RFC 2544 benchmarking range, never routed):
//!
//! | what | address |
//! |---|---|
//! | root end of the network (apiserver, databases) | 198.18.4k.1/24 |
//! | node `i` (1..=3) | 198.18.4k.(10+i)/24 |
//! | pods of node `i` | 198.18.(4k+i).0/24, gateway .1 |
//! | Service cluster IPs | 198.19.k.0/24 |

use std::net::Ipv4Addr;

/// Where slots are claimed (tmpfs: gone at reboot, like the namespaces).
pub const SLOT_DIR: &str = "/run/joc-ha-realnode";
/// Our cgroup subtree, in every v1 hierarchy (docs/real-node.md).
pub const CGROUP_PARENT: &str = "realnode";
/// The cgroup v1 hierarchies a kubelet wants its cgroup root in.
pub const CGROUP_HIERARCHIES: [&str; 9] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd",
];
/// What teardown looks into: the kubelet also mirrors its cgroups into the
/// cgroup v2 mount of this hybrid layout.
pub const SWEPT_HIERARCHIES: [&str; 10] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd",
    "unified",
];
pub const MAX_SLOT: u8 = 63;
pub const MAX_NODES: u8 = 3;

/// One environment's share of the names and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u8);

impl Slot {
    /// `None` outside 1..=[`MAX_SLOT`].
    pub fn new(k: u8) -> Option<Self> {
        (1..=MAX_SLOT).contains(&k).then_some(Self(k))
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// The prefix of every name of this slot; also the root end's link name.
    pub fn scope(self) -> String {
        format!("jhrn{}", self.0)
    }

    pub fn hub_netns(self) -> String {
        format!("{}-hub", self.scope())
    }

    pub fn root_address(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 4 * self.0, 1)
    }

    /// The slot's whole 198.18 block (hub and pod networks), /22.
    pub fn block(self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(198, 18, 4 * self.0, 0), 22)
    }

    pub fn service_range(self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(198, 19, self.0, 0), 24)
    }

    /// `None` outside 1..=[`MAX_NODES`].
    pub fn node(self, index: u8) -> Option<NodePlan> {
        (1..=MAX_NODES)
            .contains(&index)
            .then_some(NodePlan { slot: self, index })
    }
}

/// Names and addresses of node `index` of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePlan {
    pub slot: Slot,
    pub index: u8,
}

impl NodePlan {
    /// Netns name and cgroup name (the kubelet's pods go below it).
    pub fn scope(self) -> String {
        format!("{}-n{}", self.slot.scope(), self.index)
    }

    /// The Kubernetes Node name.
    pub fn node_name(self) -> String {
        format!("realnode-{}", self.index)
    }

    /// The node's end of its veth in the hub, as named inside the hub netns.
    pub fn hub_link(self) -> String {
        format!("h{}", self.index)
    }

    pub fn address(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 4 * self.slot.0, 10 + self.index)
    }

    pub fn pod_subnet(self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(198, 18, 4 * self.slot.0 + self.index, 0), 24)
    }

    pub fn pod_gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 4 * self.slot.0 + self.index, 1)
    }

    /// The kubelet's `cgroupRoot`.
    pub fn cgroup_root(self) -> String {
        format!("/{CGROUP_PARENT}/{}", self.scope())
    }

    /// Where containerd, the kubelet and kube-proxy run (so a sweep finds them).
    pub fn daemon_cgroup(self) -> String {
        format!("{}-daemons", self.scope())
    }

    /// The other nodes of the slot: their pod subnets are routed via their address.
    pub fn peers(self) -> impl Iterator<Item = NodePlan> {
        (1..=MAX_NODES)
            .filter(move |&i| i != self.index)
            .map(move |index| NodePlan {
                slot: self.slot,
                index,
            })
    }
}

/// Whether `name` belongs to `scope`: the scope itself or `scope-…`
/// (so `jhrn1` does not claim `jhrn12`).
pub fn in_scope(name: &str, scope: &str) -> bool {
    name == scope
        || name
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('-'))
}

pub fn cidr((network, prefix): (Ipv4Addr, u8)) -> String {
    format!("{network}/{prefix}")
}

/// Whether `address` is inside `network/prefix`.
pub fn contains((network, prefix): (Ipv4Addr, u8), address: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(address) & mask == u32::from(network) & mask
}

/// 198.18.0.0/15, the only range we use.
pub fn ours(address: Ipv4Addr) -> bool {
    contains((Ipv4Addr::new(198, 18, 0, 0), 15), address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_nodes_exist_only_in_range() {
        for (k, valid) in [(0, false), (1, true), (63, true), (64, false), (255, false)] {
            assert_eq!(Slot::new(k).is_some(), valid, "slot {k}");
        }
        let slot = Slot::new(5).expect("slot");
        for (i, valid) in [(0, false), (1, true), (3, true), (4, false)] {
            assert_eq!(slot.node(i).is_some(), valid, "node {i}");
        }
    }

    #[test]
    fn the_plan_of_a_slot() {
        // (slot, node, root, node address, pod subnet, service range)
        let table = [
            (
                1,
                1,
                "198.18.4.1",
                "198.18.4.11",
                "198.18.5.0/24",
                "198.19.1.0/24",
            ),
            (
                1,
                3,
                "198.18.4.1",
                "198.18.4.13",
                "198.18.7.0/24",
                "198.19.1.0/24",
            ),
            (
                63,
                2,
                "198.18.252.1",
                "198.18.252.12",
                "198.18.254.0/24",
                "198.19.63.0/24",
            ),
            (
                63,
                3,
                "198.18.252.1",
                "198.18.252.13",
                "198.18.255.0/24",
                "198.19.63.0/24",
            ),
        ];
        for (k, i, root, address, pods, services) in table {
            let slot = Slot::new(k).expect("slot");
            let node = slot.node(i).expect("node");
            assert_eq!(slot.root_address().to_string(), root);
            assert_eq!(node.address().to_string(), address);
            assert_eq!(cidr(node.pod_subnet()), pods);
            assert_eq!(cidr(slot.service_range()), services);
        }
    }

    #[test]
    fn every_address_of_every_slot_is_ours_and_slots_do_not_overlap() {
        let mut seen = std::collections::HashSet::new();
        for k in 1..=MAX_SLOT {
            let slot = Slot::new(k).expect("slot");
            assert!(ours(slot.root_address()));
            assert!(ours(slot.service_range().0));
            assert!(contains(slot.block(), slot.root_address()));
            for i in 1..=MAX_NODES {
                let node = slot.node(i).expect("node");
                assert!(ours(node.address()) && ours(node.pod_gateway()));
                assert!(contains(slot.block(), node.pod_gateway()));
                assert!(seen.insert(node.pod_subnet()), "{node:?} overlaps");
            }
            assert!(seen.insert(slot.service_range()));
        }
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.0.1",
            "198.20.0.1",
            "198.17.255.255",
        ] {
            assert!(!ours(private.parse().expect("ip")), "{private}");
        }
    }

    #[test]
    fn names_and_scopes() {
        let slot = Slot::new(1).expect("slot");
        let node = slot.node(2).expect("node");
        assert_eq!(node.scope(), "jhrn1-n2");
        assert_eq!(node.cgroup_root(), "/realnode/jhrn1-n2");
        assert_eq!(slot.hub_netns(), "jhrn1-hub");
        assert!(slot.scope().len() <= 15, "a link name has at most 15 bytes");
        for (name, scope, inside) in [
            ("jhrn1", "jhrn1", true),
            ("jhrn1-hub", "jhrn1", true),
            ("jhrn1-n2-daemons", "jhrn1-n2", true),
            ("jhrn12-hub", "jhrn1", false),
            ("jhrn1-n2", "jhrn1-n1", false),
            ("xjhrn1", "jhrn1", false),
        ] {
            assert_eq!(in_scope(name, scope), inside, "{name} in {scope}");
        }
        let peers: Vec<u8> = node.peers().map(|p| p.index).collect();
        assert_eq!(peers, [1, 3]);
    }
}
