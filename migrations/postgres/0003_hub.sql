-- The hub: which revision each config serves, the game servers it knows,
-- and deployments.

ALTER TABLE configs ADD COLUMN active_revision BIGINT;

-- Known game servers, so the registry survives a restart (shown disconnected).
CREATE TABLE game_servers (
    server_id     TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    region        TEXT NOT NULL,
    environment   TEXT NOT NULL,
    tags          TEXT NOT NULL,
    operator_tags TEXT NOT NULL,
    capacity      BIGINT NOT NULL,
    players       BIGINT NOT NULL,
    hostname      TEXT,
    address       TEXT,
    build         TEXT,
    sdk           TEXT,
    subscriptions TEXT NOT NULL,
    applied       TEXT NOT NULL,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL
);

CREATE TABLE deployments (
    id                TEXT PRIMARY KEY,
    config_id         TEXT NOT NULL REFERENCES configs (id),
    config_name       TEXT NOT NULL,
    version           TEXT NOT NULL,
    revision          BIGINT NOT NULL,
    previous_revision BIGINT,
    strategy          TEXT NOT NULL,
    environment       TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    completed_at      BIGINT,
    target_count      BIGINT NOT NULL,
    acked_count       BIGINT NOT NULL,
    failed_count      BIGINT NOT NULL
);
CREATE INDEX deployments_by_config ON deployments (config_id, created_at);
