//! js7 mode: keeps JOC Cockpit's own active member (table `JOC_CLUSTER`)
//! in agreement with the lease and the `active` label.
//!
//! JOC instances elect an active member themselves through the shared
//! database (SOS's `sos-joc/sos-joc-cluster/.../JocCluster.java`): every
//! instance writes its heartbeat into `JOC_INSTANCES` each polling interval;
//! the active one refreshes `JOC_CLUSTER.HEART_BEAT`; a standby takes over
//! when that heartbeat is older than the exceeded interval (database UTC
//! time, whole seconds); a switch-over request is a `SWITCH_MEMBER_ID` that
//! the active instance executes at its next poll. If JOC's active member is
//! not the labeled pod, users reach a JOC standby. The rules here:
//!
//! * Only a member whose JOC instance has a fresh heartbeat (and is not an
//!   API server) is *ready* in the lease: it may take or receive the lease.
//!   A holder whose own JOC stops heartbeating gives the lease up.
//! * The holder asks JOC to make its member active when JOC's active member
//!   is another one that did not just move there by itself.
//! * When JOC's active member moves by itself (a standby JOC took over from
//!   a failed one, or a user switched in JOC's GUI) to a ready member, the
//!   lease follows JOC: the holder hands it to that member's pod.
//! * The holder is labeled `active` only once JOC confirms its member active.
//!
//! **How the holder asks JOC to switch**: it writes the switch request into
//! `JOC_CLUSTER` (`SWITCH_MEMBER_ID`, `SWITCH_HEART_BEAT` = database UTC now),
//! the same two columns JOC's own `switch_member` REST call writes when the
//! receiving instance is not the active one, and nothing else. We chose this
//! over calling the REST API because (1) it needs no JOC account, password or
//! session; (2) it works while the active JOC is hung or gone, where a REST
//! call could not be answered by the instance that must act — a pending
//! request also makes the other standbys wait and lets exactly the requested
//! member take over once the old heartbeat is exceeded (JOC's "wait for
//! switchMember" rule); (3) JOC's own checks still apply: the active JOC
//! ignores a request whose `SWITCH_HEART_BEAT` is exceeded, and we check
//! JOC's REST refusals (API-server target, stale target) before writing.
//! What we cannot check is JOC's license: without a cluster license JOC
//! does not switch, and the label then waits (the sidecar says why).

mod config_files;
pub mod fence;
pub mod look;
mod member_id;
mod tables;
mod view;

pub use config_files::{ConfigFileError, hibernate_cfg_xml, render_joc_config};
pub use member_id::{hostname_of, member_id};
pub use tables::{FencedRelease, JocTables, TablesError};
pub use view::{
    ClusterRow, ContainerRun, HealthBaseline, HolderStep, InstanceRow, InstanceStamp, JocView,
    StaleSwitchRequest, holder_step, keeps_waiting_heart_beat, own_health, security_level_number,
    silent_after_s, stale_switch_request, unlicensed_holder_step, waiting_holder_step,
};
