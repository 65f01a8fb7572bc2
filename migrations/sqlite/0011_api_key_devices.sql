-- An API key may be limited to a list of devices (a JSON array of names); NULL: every device.
ALTER TABLE api_keys ADD COLUMN devices TEXT;
