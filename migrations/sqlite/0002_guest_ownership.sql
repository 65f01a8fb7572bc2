-- The PVE configuration keys mycopod set on each guest the last time it applied it, so that a
-- key dropped from the declaration is removed from the guest (and only such keys are).
CREATE TABLE guest_ownership (
    cluster     TEXT    NOT NULL,
    vmid        INTEGER NOT NULL,
    keys_json   TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (cluster, vmid)
);
