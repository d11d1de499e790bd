-- js7 mode: JOC keeps one cluster per database (its own tables are
-- database-wide), so the first JocCluster (namespace/name) whose sidecar
-- connects claims the database here, and the sidecars of any other cluster
-- refuse to join. Existing lease tables keep working: the first sidecar of
-- this release claims the database for its cluster.
CREATE TABLE IF NOT EXISTS joc_ha_owner (
    scope      VARCHAR(32)  NOT NULL,
    cluster_id VARCHAR(255) NOT NULL,
    claimed_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (scope)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
