-- Configs, their immutable versions, schemas and the audit trail.
-- Portable shapes: TEXT for ids and JSON, BIGINT Unix milliseconds for times,
-- BIGINT 0/1 for flags.

CREATE TABLE configs (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    config_type      TEXT NOT NULL,
    environment      TEXT NOT NULL,
    schema_id        TEXT,
    default_strategy TEXT,
    description      TEXT,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT,
    deleted_by       TEXT
);

-- Never updated: a new version is a new row.
CREATE TABLE config_versions (
    id          TEXT PRIMARY KEY,
    config_id   TEXT NOT NULL REFERENCES configs (id),
    revision    BIGINT NOT NULL,
    version     TEXT NOT NULL,
    content     TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    author      TEXT NOT NULL,
    message     TEXT,
    rollback_of TEXT,
    breaking    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (config_id, revision),
    UNIQUE (config_id, version)
);

CREATE TABLE version_tags (
    config_id TEXT NOT NULL REFERENCES configs (id),
    revision  BIGINT NOT NULL,
    tag       TEXT NOT NULL,
    added_by  TEXT NOT NULL,
    added_at  BIGINT NOT NULL,
    PRIMARY KEY (config_id, revision, tag)
);

CREATE TABLE version_approvals (
    config_id   TEXT NOT NULL REFERENCES configs (id),
    revision    BIGINT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at BIGINT NOT NULL,
    comment     TEXT,
    PRIMARY KEY (config_id, revision)
);

CREATE TABLE validation_reports (
    id         TEXT PRIMARY KEY,
    config_id  TEXT NOT NULL REFERENCES configs (id),
    revision   BIGINT NOT NULL,
    valid      BIGINT NOT NULL,
    report     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX validation_reports_by_version ON validation_reports (config_id, revision, created_at);

CREATE TABLE schemas (
    schema_id            TEXT NOT NULL,
    seq                  BIGINT NOT NULL,
    version              TEXT NOT NULL,
    compatibility        TEXT NOT NULL,
    document             TEXT NOT NULL,
    description          TEXT,
    builtin              BIGINT NOT NULL,
    created_by           TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    breaking_approved_by TEXT,
    PRIMARY KEY (schema_id, seq),
    UNIQUE (schema_id, version)
);

-- Append-only.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    summary    TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_by_resource ON audit_log (resource, seq);
