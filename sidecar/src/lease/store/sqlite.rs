//! SQLite: one database file shared by the processes of one host (local
//! demos; not for files on network filesystems). There is no server, hence
//! no server clock and no sessions:
//!
//! * "Database time" is the host's `CLOCK_MONOTONIC` (milliseconds), which
//!   every process on the host shares and which no wall-clock change (NTP
//!   step, `date -s`, libfaketime) moves. It is read right before each
//!   statement and passed in; a stale reading only makes a check more
//!   conservative (a lease looks less expired, a renewal expires earlier).
//!   Every time is stored with the host's boot id: times from another boot
//!   count as expired.
//! * Only the TTL rule applies: no early take-over after a crash.
//! * Standbys learn of a release or hand-over at their next heartbeat (every
//!   renew interval): polling, which is cheap on a local file.
//! * WAL mode and a busy timeout let the processes write concurrently.

use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::sql::{self, Param::*, Stmt};
use super::{Capabilities, Conn, Ctx, Dialect, Me, new_session_key};
use crate::lease::error::LeaseError;

const READ: &str = "SELECT holder, holder_session, term, \
     CASE WHEN clock IS ?2 THEN expires_at - ?3 ELSE -1 END, \
     CASE WHEN clock IS ?2 THEN ?3 - renewed_at END, ?3 \
     FROM joc_ha_lease WHERE cluster_id = ?1";

const HEARTBEAT: &str = "INSERT INTO joc_ha_member \
     (cluster_id, member, kind, ready, session_key, clock, heartbeat_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (cluster_id, member) DO UPDATE \
     SET kind = excluded.kind, ready = excluded.ready, session_key = excluded.session_key, \
     clock = excluded.clock, heartbeat_at = excluded.heartbeat_at \
     RETURNING (SELECT holder FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT holder_session FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT term FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT CASE WHEN clock IS ?6 THEN expires_at - ?7 ELSE -1 END \
      FROM joc_ha_lease WHERE cluster_id = ?1), \
     (SELECT CASE WHEN clock IS ?6 THEN ?7 - renewed_at END \
      FROM joc_ha_lease WHERE cluster_id = ?1), \
     ?7";

const ENSURE_LEASE: &str = "INSERT INTO joc_ha_lease (cluster_id, term, expires_at) \
     VALUES (?1, 0, 0) ON CONFLICT (cluster_id) DO NOTHING";

const ACQUIRE: &str = "UPDATE joc_ha_lease SET holder = ?2, holder_session = ?3, \
     term = term + 1, clock = ?6, acquired_at = ?7, renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND term = ?4 AND (clock IS NOT ?6 OR expires_at <= ?7 \
     OR holder IS NULL OR (holder = ?2 AND holder_session = ?3)) RETURNING term";

const RENEW: &str = "UPDATE joc_ha_lease SET renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     AND clock IS ?6 AND expires_at > ?7 RETURNING term";

const RELEASE: &str = "UPDATE joc_ha_lease SET holder = NULL, holder_session = NULL, \
     renewed_at = ?7, expires_at = ?7 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     RETURNING term";

const HAND_OVER: &str = "UPDATE joc_ha_lease SET holder = ?8, \
     holder_session = (SELECT session_key FROM joc_ha_member WHERE cluster_id = ?1 AND member = ?8), \
     term = term + 1, acquired_at = ?7, renewed_at = ?7, expires_at = ?7 + ?5 \
     WHERE cluster_id = ?1 AND holder = ?2 AND holder_session = ?3 AND term = ?4 \
     AND clock IS ?6 AND expires_at > ?7 \
     AND EXISTS (SELECT 1 FROM joc_ha_member WHERE cluster_id = ?1 AND member = ?8 \
     AND member <> ?2 AND kind = 'member' AND ready AND session_key IS NOT NULL \
     AND clock IS ?6 AND heartbeat_at > ?7 - ?9) RETURNING term";

const SET_READY: &str = "UPDATE joc_ha_member SET ready = ?3, clock = ?4, heartbeat_at = ?5 \
     WHERE cluster_id = ?1 AND member = ?2";

const MEMBERS: &str = "SELECT m.member, m.kind, m.ready, \
     CASE WHEN m.clock IS ?2 THEN ?3 - m.heartbeat_at END, \
     COALESCE(l.holder = m.member AND l.clock IS ?2 AND l.expires_at > ?3, 0), \
     CASE WHEN l.clock IS ?2 THEN ?3 - l.renewed_at END \
     FROM joc_ha_member m LEFT JOIN joc_ha_lease l ON l.cluster_id = m.cluster_id \
     WHERE m.cluster_id = ?1 ORDER BY m.member";

const COUNT_TABLES: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
     AND name IN ('joc_ha_lease', 'joc_ha_member')";

/// Several processes may start at once; SQLite's migrator takes no lock, so a
/// loser of the race sees a busy database or a duplicate version and retries.
const MIGRATE_ATTEMPTS: u32 = 6;

const HEARTBEAT_STMT: Stmt = Stmt::new(
    "heartbeat",
    HEARTBEAT,
    &[Cluster, Member, Kind, Ready, Key, Boot, Now],
);
/// Every update of the lease row binds the same parameters.
const UPDATE: &[sql::Param] = &[Cluster, Member, Key, Term, TtlMs, Boot, Now];

const CLAIM: &str = "INSERT OR IGNORE INTO joc_ha_owner (scope, cluster_id) VALUES ('js7', ?1)";

const OWNER: &str = "SELECT cluster_id FROM joc_ha_owner WHERE scope = 'js7'";

pub(crate) static DIALECT: Dialect = Dialect {
    caps: Capabilities {
        session_locks: false,
        holder_blind_to_session_end: false,
        heartbeat_reads_lease: true,
        rekey_wakes_waiters: false,
    },
    heartbeat: HEARTBEAT_STMT,
    read: Stmt::new("read lease", READ, &[Cluster, Boot, Now]),
    register: &[
        Stmt::new("register", ENSURE_LEASE, &[Cluster]),
        HEARTBEAT_STMT,
    ],
    acquire: Stmt::new("acquire", ACQUIRE, UPDATE),
    steal: None,
    renew: Stmt::new("renew", RENEW, UPDATE),
    release: Stmt::new("release", RELEASE, UPDATE),
    hand_over: Stmt::new(
        "hand over",
        HAND_OVER,
        &[
            Cluster, Member, Key, Term, TtlMs, Boot, Now, Target, FreshMs,
        ],
    ),
    set_ready: Stmt::new("set ready", SET_READY, &[Cluster, Member, Ready, Boot, Now]),
    members: Stmt::new("list members", MEMBERS, &[Cluster, Boot, Now]),
    claim: Stmt::new("claim the database", CLAIM, &[Cluster]),
    owner: Stmt::new("read the database's owner", OWNER, &[]),
};

/// Milliseconds of the host's monotonic clock: SQLite's "database time".
pub(crate) fn now_ms() -> Result<i64, LeaseError> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_err(|error| {
        LeaseError::Database {
            op: "read clock",
            target: "CLOCK_MONOTONIC".to_owned(),
            detail: error.to_string(),
        }
    })?;
    Ok(now.tv_sec() * 1000 + now.tv_nsec() / 1_000_000)
}

/// Identifies the current boot: monotonic times of another boot mean nothing.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| "unknown-boot".to_owned())
}

/// Opens the database file in WAL mode.
pub(crate) async fn connect(
    ctx: &Ctx,
    options: SqliteConnectOptions,
) -> Result<(Conn, Me), LeaseError> {
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(1));
    let mut conn = ctx
        .open(sqlx::SqliteConnection::connect_with(&options))
        .await?;
    if ctx.migrate {
        let migrator = sql::named(sqlx::migrate!("../migrations/sqlite"));
        sql::migrate(ctx, &migrator, &mut conn, MIGRATE_ATTEMPTS).await?;
    }
    sql::check_schema(ctx, COUNT_TABLES, &mut conn).await?;
    sql::claim_database(ctx, &DIALECT.claim, &DIALECT.owner, &mut conn).await?;
    let me = Me {
        key: new_session_key(),
        lock: String::new(),
        boot: boot_id(),
    };
    Ok((Conn::Sqlite(conn), me))
}
