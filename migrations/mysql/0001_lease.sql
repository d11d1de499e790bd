-- joc-ha lease schema (MariaDB / MySQL). Only joc_ha_* tables: JOC's own
-- tables are never touched. Times are the server's UTC_TIMESTAMP(6).

-- One row per cluster. term is the fencing token: +1 on every acquire,
-- take-over and hand-over, never reused; release keeps it.
CREATE TABLE IF NOT EXISTS joc_ha_lease (
    cluster_id     VARCHAR(255) NOT NULL,
    holder         VARCHAR(255) NULL,
    -- Session lock of the holder's database session: GET_LOCK('joc-ha:<hex>').
    holder_session BIGINT       NULL,
    term           BIGINT       NOT NULL DEFAULT 0,
    acquired_at    DATETIME(6)  NULL,
    renewed_at     DATETIME(6)  NULL,
    expires_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (cluster_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per member: heartbeat (standbys; the holder's renewals count as its
-- heartbeat), ready flag and kind, for hand-over targets and status.
CREATE TABLE IF NOT EXISTS joc_ha_member (
    cluster_id   VARCHAR(255) NOT NULL,
    member       VARCHAR(255) NOT NULL,
    kind         VARCHAR(16)  NOT NULL,
    ready        BOOLEAN      NOT NULL DEFAULT FALSE,
    session_key  BIGINT       NULL,
    heartbeat_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (cluster_id, member)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
