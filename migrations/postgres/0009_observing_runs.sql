-- A run is recorded the moment its trigger is accepted (`observing`) and may end with nothing
-- to change (`no_changes`).
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN ('observing', 'no_changes',
    'awaiting_approval', 'approved', 'applying', 'succeeded', 'failed', 'partially_failed',
    'rejected', 'expired', 'superseded', 'invalid'));
