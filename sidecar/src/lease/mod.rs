//! The shared-database lease: exactly one active member per cluster, agreed
//! through the database only. Knows nothing of Kubernetes.
//!
//! # Protocol
//!
//! Tables (`migrations/{postgres,mysql,sqlite}/`, applied at start with
//! sqlx's migrator into `joc_ha_migrations`): `joc_ha_lease` (one row per
//! cluster: holder, holder's session key, term, acquired/renewed/expires at)
//! and `joc_ha_member` (one row per member: kind, ready, session key,
//! heartbeat).
//!
//! * **Term** is the fencing token: +1 on every acquire, take-over and
//!   hand-over, never reused; a release keeps it (the next holder gets +1).
//!   A process also never starts two active periods with the same term.
//! * **Expiry** is judged only by the database's clock inside each statement
//!   (`expires_at <= now()`); clients never send wall-clock times, so a
//!   skewed host clock changes nothing. (SQLite has no server: it uses the
//!   host's monotonic clock, tagged with the boot id; see `store/sqlite.rs`.)
//! * **Holder's deadline**: a renew sent at local monotonic instant `t` that
//!   succeeds lets the holder act until `t + ttl - margin` (margin = ttl/5,
//!   see [`LeaseConfig::margin`]). The database expires the lease at
//!   `now_db + ttl` with `now_db` after `t`, so the holder has stopped at
//!   least `margin` before anyone else can acquire. Without a successful
//!   renew it demotes at that deadline on its own.
//! * **Sessions** (PostgreSQL, MariaDB/MySQL): each member opens a session
//!   connection holding a session-level lock under a fresh random key, and
//!   all its lease statements run on it and check in SQL that they still hold
//!   that lock. The lease row records the holder's key. Standbys keep a second
//!   "waiter" connection blocked on the holder's key: when the holder's
//!   process dies, the server frees the lock and the waiter returns at once,
//!   and a standby takes over (`term + 1`) without waiting for the TTL.
//!   Keys belong to sessions, not terms, so a hand-over target already holds
//!   its key and no waiter can grab it first. Frozen or cut-off holders keep
//!   their session: for them only the TTL applies. See `store/postgres.rs`
//!   (250 ms guard, [`TAKEOVER_GUARD`]) and `store/mysql.rs` (the holder
//!   cannot see its own session end, so its role is also bounded by
//!   `2 × renew interval` after its last verified renew, and a standby takes
//!   over early only `hold + margin` after that renew).
//! * **Wake-ups**: NOTIFY on PostgreSQL; on MariaDB the holder moves to a new
//!   session lock on release and hand-over, which wakes the waiters; SQLite
//!   polls every renew interval.
//!
//! Cost in steady state: the holder renews once per renew interval; each
//! standby heartbeats once per interval (PostgreSQL and SQLite read the
//! lease in the same statement; MariaDB reads it about once per TTL), and
//! its waiter re-blocks once per 10 s.

mod backoff;
mod config;
mod decide;
mod elector;
mod error;
mod runner;
mod session;
mod store;
mod url;
mod waiter;

pub use config::{DEFAULT_RENEW_INTERVAL, DEFAULT_TTL, LeaseConfig, MemberKind};
pub use elector::{
    Elector, ElectorHandle, ElectorStatus, HandOverOutcome, HandOverTarget, LeaseSnapshot, Role,
    TAKEOVER_GUARD,
};
/// For the js7 module, which reads JOC's tables in the same database.
pub(crate) use error::scrub;
pub use error::{LeaseError, redact_url};
pub use store::MemberRow;
pub(crate) use url::Options;
pub use url::{DatabaseKind, DatabaseUrl};

/// js7 mode, before JOC starts (the `joc-config` init container): applies
/// the migrations, claims the database for `cluster_id` if nobody has
/// (one `INSERT` on the primary key of `joc_ha_owner`, so of two clusters
/// starting at once exactly one wins), and fails with
/// [`LeaseError::DatabaseInUse`] when another cluster owns it. Writes no
/// lease or member row; a refused cluster writes nothing at all.
pub async fn claim_database(cluster_id: &str, member: &str, url: &str) -> Result<(), LeaseError> {
    let mut config = LeaseConfig::new(cluster_id, member);
    // Never a lease candidate, no waiter connection: only connect and claim.
    config.kind = MemberKind::ApiServer;
    config.exclusive = true;
    config.validate()?;
    let url = DatabaseUrl::parse(url)?;
    let statements = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ctx = std::sync::Arc::new(store::Ctx::new(&config, url, statements));
    // The session (and its lock) ends when the store is dropped.
    let (_store, _waiter) = store::Store::connect(ctx).await?;
    Ok(())
}
