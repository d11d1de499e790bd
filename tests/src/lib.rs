//! The joc-ha test harness: a real Kubernetes control plane on loopback, a fake
//! kubelet for one Node, real nodes (kubelet, containerd, kube-proxy: see
//! [`realnode`]), and real PostgreSQL, MariaDB and SQLite databases.
//! Every piece tears itself down on drop, after a panic too.

pub mod agreement;
pub mod bench;
pub mod chaos;
pub mod controlplane;
pub mod db;
pub mod history;
pub mod joc;
pub mod kubelet;
pub mod lease_history;
pub mod operator;
pub mod process;
pub mod proxy;
pub mod realnode;
pub mod stack;
pub mod wait;
