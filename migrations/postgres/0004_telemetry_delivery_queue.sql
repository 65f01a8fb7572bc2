-- Notifications survive a crash: the alert transition that causes one queues it ('queued',
-- attempt 0) in the same transaction, and the notifier works from the log, so nothing lies
-- only in memory between the transition and the first attempt. A delivery that a channel's
-- minSeverity filters out is recorded as 'skipped' so it is never picked up again.
ALTER TABLE notification_deliveries DROP CONSTRAINT notification_deliveries_status_check;
ALTER TABLE notification_deliveries ADD CONSTRAINT notification_deliveries_status_check
    CHECK (status IN ('queued', 'retrying', 'succeeded', 'failed', 'skipped'));
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
