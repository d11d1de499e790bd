-- joc-ha lease schema (SQLite). Times are milliseconds of the host's
-- CLOCK_MONOTONIC, tagged with the boot id in `clock` (see the sidecar's
-- lease::store::sqlite module): no wall clock is involved.

-- One row per cluster. term is the fencing token: +1 on every acquire and
-- hand-over, never reused; release keeps it.
CREATE TABLE IF NOT EXISTS joc_ha_lease (
    cluster_id     TEXT    NOT NULL PRIMARY KEY,
    holder         TEXT    NULL,
    holder_session INTEGER NULL,
    term           INTEGER NOT NULL DEFAULT 0,
    clock          TEXT    NULL,
    acquired_at    INTEGER NULL,
    renewed_at     INTEGER NULL,
    expires_at     INTEGER NOT NULL DEFAULT 0
);

-- One row per member: heartbeat, ready flag and kind.
CREATE TABLE IF NOT EXISTS joc_ha_member (
    cluster_id   TEXT    NOT NULL,
    member       TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('member', 'api-server')),
    ready        INTEGER NOT NULL DEFAULT 0,
    session_key  INTEGER NULL,
    clock        TEXT    NULL,
    heartbeat_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (cluster_id, member)
);
