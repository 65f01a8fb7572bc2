-- no-transaction
-- A run is recorded the moment its trigger is accepted (`observing`) and may end with nothing
-- to change (`no_changes`). SQLite cannot change a CHECK constraint in place, so `runs` is
-- rebuilt the documented way: foreign keys off (outside any transaction, hence the line
-- above), copy, drop, rename, and a foreign key check before committing. `actions`,
-- `approvals` and `runs.superseded_by` name `runs` and point at the new table once renamed.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE runs_rebuilt (
    id                  INTEGER PRIMARY KEY,
    scope               TEXT    NOT NULL,
    commit_sha          TEXT    NOT NULL,
    trigger_source      TEXT    NOT NULL
        CHECK (trigger_source IN ('poll', 'webhook', 'manual', 'drift', 'cli')),
    requested_by        TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('observing', 'no_changes',
        'awaiting_approval', 'approved', 'applying', 'succeeded', 'failed', 'partially_failed',
        'rejected', 'expired', 'superseded', 'invalid')),
    plan_json           TEXT    NOT NULL,
    plan_hash           TEXT    NOT NULL,
    required_approvals  INTEGER NOT NULL DEFAULT 0,
    error               TEXT,
    superseded_by       INTEGER REFERENCES runs (id),
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    approved_at         TEXT,
    started_at          TEXT,
    finished_at         TEXT,
    expires_at          TEXT
);
INSERT INTO runs_rebuilt (id, scope, commit_sha, trigger_source, requested_by, status,
    plan_json, plan_hash, required_approvals, error, superseded_by, created_at, updated_at,
    approved_at, started_at, finished_at, expires_at)
SELECT id, scope, commit_sha, trigger_source, requested_by, status, plan_json, plan_hash,
    required_approvals, error, superseded_by, created_at, updated_at, approved_at, started_at,
    finished_at, expires_at
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_rebuilt RENAME TO runs;
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_scope_status ON runs (scope, status);
CREATE INDEX runs_commit ON runs (commit_sha);
COMMIT;
PRAGMA foreign_keys = ON;
