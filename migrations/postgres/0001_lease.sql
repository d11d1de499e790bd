-- joc-ha lease schema (PostgreSQL). Only joc_ha_* tables: JOC's own tables are
-- never touched. Times are the server's now(); expiry is judged by it alone.

-- One row per cluster. term is the fencing token: +1 on every acquire,
-- take-over and hand-over, never reused; release keeps it.
CREATE TABLE IF NOT EXISTS joc_ha_lease (
    cluster_id     TEXT        PRIMARY KEY,
    holder         TEXT        NULL,
    -- Session lock key of the holder's database session (advisory lock).
    holder_session BIGINT      NULL,
    term           BIGINT      NOT NULL DEFAULT 0,
    acquired_at    TIMESTAMPTZ NULL,
    renewed_at     TIMESTAMPTZ NULL,
    expires_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per member: heartbeat (standbys; the holder's renewals count as its
-- heartbeat), ready flag and kind, for hand-over targets and status.
CREATE TABLE IF NOT EXISTS joc_ha_member (
    cluster_id   TEXT        NOT NULL,
    member       TEXT        NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('member', 'api-server')),
    ready        BOOLEAN     NOT NULL DEFAULT false,
    session_key  BIGINT      NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, member)
);
