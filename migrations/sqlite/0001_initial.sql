-- mycopod schema, SQLite flavour. migrations/postgres/0001_initial.sql holds the same tables.
-- Timestamps are RFC 3339 UTC text written by the application (never CURRENT_TIMESTAMP), so
-- text order is time order. Reading times are integer microseconds since the Unix epoch.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   TEXT,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);

CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT    NOT NULL UNIQUE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TEXT    NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    key_hash      TEXT    NOT NULL UNIQUE,
    scopes        TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY,
    scope               TEXT    NOT NULL,
    commit_sha          TEXT    NOT NULL,
    trigger_source      TEXT    NOT NULL
        CHECK (trigger_source IN ('poll', 'webhook', 'manual', 'drift', 'cli')),
    requested_by        TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('awaiting_approval', 'approved',
        'applying', 'succeeded', 'failed', 'partially_failed', 'rejected', 'expired',
        'superseded', 'invalid')),
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
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_scope_status ON runs (scope, status);
CREATE INDEX runs_commit ON runs (commit_sha);

CREATE TABLE actions (
    id                  INTEGER PRIMARY KEY,
    run_id              INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq                 INTEGER NOT NULL,
    action_key          TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    resource            TEXT    NOT NULL,
    verb                TEXT    NOT NULL,
    diff_json           TEXT    NOT NULL,
    required_approvals  INTEGER NOT NULL DEFAULT 0,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'waiting', 'running',
        'succeeded', 'failed', 'skipped')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    external_ref        TEXT,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    UNIQUE (run_id, seq),
    UNIQUE (run_id, action_key)
);

CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    user_name   TEXT    NOT NULL,
    plan_hash   TEXT    NOT NULL,
    decision    TEXT    NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment     TEXT,
    created_at  TEXT    NOT NULL,
    UNIQUE (run_id, user_name)
);

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);

CREATE TABLE declarations (
    name            TEXT PRIMARY KEY,
    commit_sha      TEXT NOT NULL,
    text            TEXT NOT NULL,
    generated_yaml  TEXT,
    model           TEXT,
    status          TEXT NOT NULL,
    error           TEXT,
    updated_at      TEXT NOT NULL
);

CREATE TABLE config_objects (
    kind        TEXT NOT NULL
        CHECK (kind IN ('AlertRule', 'NotificationChannel', 'HandshakePolicy')),
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE devices (
    name                  TEXT PRIMARY KEY,
    online                BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen             TEXT,
    last_error            TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    updated_at            TEXT    NOT NULL
);

-- One row per (device, register) series, carrying its newest reading, upserted with every
-- batch; readings refer to it by a small integer key.
CREATE TABLE series (
    id            INTEGER PRIMARY KEY,
    device        TEXT    NOT NULL,
    register      TEXT    NOT NULL,
    latest_ts     INTEGER,
    latest_value  REAL,
    UNIQUE (device, register)
);

-- The clustered primary key serves range queries of one series without a second index.
CREATE TABLE readings (
    series_id  INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    value      REAL    NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY,
    rule             TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity         TEXT    NOT NULL,
    value            REAL,
    opened_at        TEXT    NOT NULL,
    firing_at        TEXT,
    resolved_at      TEXT,
    acknowledged_by  TEXT,
    acknowledged_at  TEXT,
    updated_at       TEXT    NOT NULL
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, device) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts (state, id);

CREATE TABLE notification_deliveries (
    id               INTEGER PRIMARY KEY,
    alert_id         INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel          TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('retrying', 'succeeded', 'failed')),
    response_code    INTEGER,
    error            TEXT,
    next_attempt_at  TEXT,
    created_at       TEXT    NOT NULL
);
CREATE INDEX notification_deliveries_alert ON notification_deliveries (alert_id, id);

CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE leader_leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    acquired_at  TEXT NOT NULL
);
