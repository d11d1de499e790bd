//! A faithful stand-in for JOC Cockpit's own cluster service (the
//! `JOC_CLUSTER` / `JOC_INSTANCES` protocol), for end-to-end tests and the
//! demo. The specification is docs/joc-facts.md, gathered from SOS's public
//! source `sos-berlin/sos-components`; every rule below names the Java file it
//! follows. Where the sources say nothing, the comment says "ours".
//!
//! The binary `joc-standin` drives [`Member`]; tests use the readers
//! ([`joc_active_member`], [`cluster_row`], [`instances`]) and the config
//! writers ([`render_joc_properties`], [`write_resources`]).
//!
//! Assumption (stated, not in JOC's code path): a cluster license is present,
//! i.e. `ClusterModeResult.getUse() == true` in `JocCluster`, so every branch
//! guarded by `!getUse()` is never taken.
//!
//! One file per section: `id` (the member id),
//! `properties` (joc.properties, joc-settings.properties), `hibernate`
//! (hibernate.cfg.xml and JDBC URLs), `sql` (JOC's tables per dialect,
//! schema, Controller registration), `reads` (what tests read and write in
//! JOC's tables), `member` (JocCluster's per-poll logic), `services` (the
//! active member's services), `switch` (the active member handler).

pub use crate::history::Dialect;

/// `JocClusterConfiguration.IDENTIFIER` = `ClusterServices.cluster.name()`:
/// the id of the single JOC_CLUSTER row.
pub const CLUSTER_ROW_ID: &str = "cluster";

/// `JocCluster.MSG_SWITCH_TO_API_SERVER`.
pub const MSG_SWITCH_TO_API_SERVER: &str = "The action to switch to an API server is not permitted";

/// What the stand-in writes into JOC_INSTANCES.VERSION (ours).
pub const STANDIN_VERSION: &str = concat!("standin-", env!("CARGO_PKG_VERSION"));

mod hibernate;
mod id;
mod member;
mod properties;
mod reads;
mod services;
mod sql;
mod switch;

pub use hibernate::{
    HibernateConfig, jdbc_to_sqlx_url, read_resources, redact_url, render_hibernate_cfg,
    sqlx_to_jdbc, write_resources,
};
pub use id::{java_path_string, member_id};
pub use member::{License, Member, MemberConfig, StartupMode, default_data_dir, polling};
pub use properties::{
    JocProperties, JocSettings, MSG_ORDERING, SecurityLevel, parse_java_properties,
    render_joc_properties,
};
pub use reads::{
    ClusterRow, ClusterRowLock, Instance, cluster_heart_beat_of, cluster_row, db_now,
    insert_witness_cluster_row, instances, joc_active_member, write_switch_request,
};
pub use services::{Services, append_period_record};
pub use sql::{connect, create_schema, ddl, is_heart_beat_exceeded, register_controller};
pub use switch::{ActiveMemberHandler, Performed, SwitchError, SwitchState};
