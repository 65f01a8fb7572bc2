-- Access tokens carry their user's session version; signing out (or being disabled) raises
-- it, so every access token issued before stops working at once.
ALTER TABLE users ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0;
