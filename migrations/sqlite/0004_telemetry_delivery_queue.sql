-- Notifications survive a crash: the alert transition that causes one queues it ('queued',
-- attempt 0) in the same transaction, and the notifier works from the log, so nothing lies
-- only in memory between the transition and the first attempt. A delivery that a channel's
-- minSeverity filters out is recorded as 'skipped' so it is never picked up again.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE notification_deliveries_new (
    id               INTEGER PRIMARY KEY,
    alert_id         INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel          TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('queued', 'retrying', 'succeeded', 'failed', 'skipped')),
    response_code    INTEGER,
    error            TEXT,
    next_attempt_at  TEXT,
    created_at       TEXT    NOT NULL
);
INSERT INTO notification_deliveries_new (id, alert_id, channel, event, attempt, status,
    response_code, error, next_attempt_at, created_at)
SELECT id, alert_id, channel, event, attempt, status, response_code, error, next_attempt_at,
    created_at
FROM notification_deliveries;
DROP TABLE notification_deliveries;
ALTER TABLE notification_deliveries_new RENAME TO notification_deliveries;
CREATE INDEX notification_deliveries_alert ON notification_deliveries (alert_id, id);
-- One notification per (alert, channel, event): queueing it twice is a no-op.
CREATE UNIQUE INDEX notification_deliveries_one_queued
    ON notification_deliveries (alert_id, channel, event) WHERE status = 'queued';
CREATE INDEX notification_deliveries_due
    ON notification_deliveries (next_attempt_at) WHERE status IN ('queued', 'retrying');
-- One row per attempt: a notifier claims attempt N by inserting its row before sending, so two
-- notifiers (replicas) never send the same attempt. Rows that would break the rule could only
-- come from such a race before this index existed; the first of each is kept.
DELETE FROM notification_deliveries WHERE id NOT IN (
    SELECT MIN(id) FROM notification_deliveries GROUP BY alert_id, channel, event, attempt);
CREATE UNIQUE INDEX notification_deliveries_one_attempt
    ON notification_deliveries (alert_id, channel, event, attempt);
