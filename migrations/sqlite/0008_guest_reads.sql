-- The last full read (configuration, digest, pending changes) of each declared guest, so an
-- observation reads a guest again only when something about it may have changed, also
-- across processes (`mycopod apply`, then `plan` or `serve`). A cache: losing it costs reads,
-- never correctness. Keyed by the cluster's endpoint. Times are microseconds since the epoch.
CREATE TABLE guest_reads (
    cluster      TEXT    NOT NULL,
    vmid         INTEGER NOT NULL,
    spec         TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    uptime       INTEGER,
    read_at      INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    config_json  TEXT    NOT NULL,
    PRIMARY KEY (cluster, vmid)
);
