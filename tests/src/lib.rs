//! The joc-ha test harness: a real Kubernetes control plane on loopback, a fake
//! kubelet for one Node, real nodes (kubelet, containerd, kube-proxy: see
//! [`realnode`]), and real PostgreSQL, MariaDB and SQLite databases.
//! Every piece tears itself down on drop, after a panic too.

pub mod agreement;
pub mod controlplane;
pub mod db;
pub mod kubelet;
pub mod lease_history;
pub mod operator;
pub mod process;
pub mod proxy;
pub mod realnode;
pub mod service_client;
pub mod stack;
pub mod wait;

// JOC's model and the history workload live with the stand-in binaries
// (crate joc-ha-standins); the harness starts those binaries, and tests reach
// the models through the harness as before.
pub use joc_ha_standins::{history, joc};
