-- js7 mode: JOC keeps one cluster per database (its own tables are
-- database-wide), so the first JocCluster (namespace/name) whose sidecar
-- connects claims the database here, and the sidecars of any other cluster
-- refuse to join. Existing lease tables keep working: the first sidecar of
-- this release claims the database for its cluster.
CREATE TABLE IF NOT EXISTS joc_ha_owner (
    scope      TEXT NOT NULL PRIMARY KEY,
    cluster_id TEXT NOT NULL
);
