-- Translations of natural-language declarations. The cache makes a commit plan the same way
-- every time: a Declaration is translated once per (text, model, prompt version) and reused.
CREATE TABLE translation_cache (
    text_sha256     TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    prompt_version  INTEGER NOT NULL,
    declaration     TEXT    NOT NULL,
    yaml            TEXT    NOT NULL,
    yaml_sha256     TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (text_sha256, model, prompt_version)
);

-- Declarations submitted through the API (POST /api/v1/declarations), with provenance.
CREATE TABLE declaration_requests (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL,
    text             TEXT    NOT NULL,
    text_sha256      TEXT    NOT NULL,
    model            TEXT    NOT NULL,
    prompt_version   INTEGER NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('translated', 'invalid', 'failed')),
    generated_yaml   TEXT,
    yaml_sha256      TEXT,
    diagnostics_json TEXT    NOT NULL,
    error            TEXT,
    requested_by     TEXT    NOT NULL,
    created_at       TEXT    NOT NULL
);
CREATE INDEX declaration_requests_name ON declaration_requests (name, id);
