-- mycopod schema, PostgreSQL flavour. migrations/sqlite/0001_initial.sql holds the same tables.
-- Timestamps are TIMESTAMPTZ written by the application. Reading times are integer
-- microseconds since the Unix epoch, as on SQLite, so bucketing SQL is shared.

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins  BIGINT NOT NULL DEFAULT 0,
    locked_until   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ    NOT NULL,
    updated_at     TIMESTAMPTZ    NOT NULL
);

CREATE TABLE refresh_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  TEXT    NOT NULL UNIQUE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      TEXT    NOT NULL,
    expires_at  TIMESTAMPTZ    NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ    NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL,
    key_hash      TEXT    NOT NULL UNIQUE,
    scopes        TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    created_at    TIMESTAMPTZ    NOT NULL,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);

CREATE TABLE runs (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope               TEXT    NOT NULL,
    commit_sha          TEXT    NOT NULL,
    trigger_source      TEXT    NOT NULL
        CHECK (trigger_source IN ('poll', 'webhook', 'manual', 'drift', 'cli')),
    requested_by        TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('awaiting_approval', 'approved',
        'applying', 'succeeded', 'failed', 'partially_failed', 'rejected', 'expired',
        'superseded', 'invalid')),
    plan_json           JSONB    NOT NULL,
    plan_hash           TEXT    NOT NULL,
    required_approvals  BIGINT NOT NULL DEFAULT 0,
    error               TEXT,
    superseded_by       BIGINT REFERENCES runs (id),
    created_at          TIMESTAMPTZ    NOT NULL,
    updated_at          TIMESTAMPTZ    NOT NULL,
    approved_at         TIMESTAMPTZ,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    expires_at          TIMESTAMPTZ
);
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_scope_status ON runs (scope, status);
CREATE INDEX runs_commit ON runs (commit_sha);

CREATE TABLE actions (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id              BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq                 BIGINT NOT NULL,
    action_key          TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    resource            TEXT    NOT NULL,
    verb                TEXT    NOT NULL,
    diff_json           JSONB    NOT NULL,
    required_approvals  BIGINT NOT NULL DEFAULT 0,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'waiting', 'running',
        'succeeded', 'failed', 'skipped')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    last_error          TEXT,
    external_ref        TEXT,
    created_at          TIMESTAMPTZ    NOT NULL,
    updated_at          TIMESTAMPTZ    NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    UNIQUE (run_id, seq),
    UNIQUE (run_id, action_key)
);

CREATE TABLE approvals (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    user_name   TEXT    NOT NULL,
    plan_hash   TEXT    NOT NULL,
    decision    TEXT    NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment     TEXT,
    created_at  TIMESTAMPTZ    NOT NULL,
    UNIQUE (run_id, user_name)
);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          TIMESTAMPTZ    NOT NULL,
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
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE config_objects (
    kind        TEXT NOT NULL
        CHECK (kind IN ('AlertRule', 'NotificationChannel', 'HandshakePolicy')),
    name        TEXT NOT NULL,
    spec_json   JSONB NOT NULL,
    spec_hash   TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE devices (
    name                  TEXT PRIMARY KEY,
    online                BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen             TIMESTAMPTZ,
    last_error            TEXT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    updated_at            TIMESTAMPTZ    NOT NULL
);

-- One row per (device, register) series, carrying its newest reading, upserted with every
-- batch; readings refer to it by a small integer key.
CREATE TABLE series (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device        TEXT    NOT NULL,
    register      TEXT    NOT NULL,
    latest_ts     BIGINT,
    latest_value  DOUBLE PRECISION,
    UNIQUE (device, register)
);

-- The primary key index serves range queries of one series.
CREATE TABLE readings (
    series_id  BIGINT           NOT NULL,
    ts         BIGINT           NOT NULL,
    value      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, ts)
);

CREATE TABLE alerts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule             TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity         TEXT    NOT NULL,
    value            DOUBLE PRECISION,
    opened_at        TIMESTAMPTZ    NOT NULL,
    firing_at        TIMESTAMPTZ,
    resolved_at      TIMESTAMPTZ,
    acknowledged_by  TEXT,
    acknowledged_at  TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ    NOT NULL
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, device) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts (state, id);

CREATE TABLE notification_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id         BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel          TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    attempt          BIGINT NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('retrying', 'succeeded', 'failed')),
    response_code    BIGINT,
    error            TEXT,
    next_attempt_at  TIMESTAMPTZ,
    created_at       TIMESTAMPTZ    NOT NULL
);
CREATE INDEX notification_deliveries_alert ON notification_deliveries (alert_id, id);

CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE leader_leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL
);
