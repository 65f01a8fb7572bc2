-- Git identities (emails) of a user, one per line, lower-case: an approver whose identity
-- matches an author or committer of a run's commits is refused where self-approval is off.
ALTER TABLE users ADD COLUMN git_emails TEXT NOT NULL DEFAULT '';
