-- Experiments, their assignments, and telemetry.

-- An experiment: its current definition (`spec`, the request body as
-- accepted), its status, and the smallest always-valid p-value seen per
-- metric and variant (`looks`, JSON), kept across restarts.
CREATE TABLE experiments (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    revision      BIGINT NOT NULL,
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    winner        TEXT,
    looks         TEXT NOT NULL DEFAULT '{}',
    started_at    BIGINT,
    finished_at   BIGINT,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Each player's first assignment (sticky): the unit it was placed by (its
-- id, or the unit attribute's value) and the variant. Written in batches
-- off the request path; never updated.
CREATE TABLE experiment_assignments (
    experiment_id TEXT NOT NULL REFERENCES experiments (id),
    player_id     TEXT NOT NULL,
    unit          TEXT NOT NULL,
    variant       TEXT NOT NULL,
    assigned_at   BIGINT NOT NULL,
    PRIMARY KEY (experiment_id, player_id)
);
CREATE INDEX experiment_assignments_unit ON experiment_assignments (experiment_id, unit);

-- The telemetry taxonomy: a JSON Schema per event type.
CREATE TABLE telemetry_event_types (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    schema      TEXT NOT NULL,
    builtin     BIGINT NOT NULL,
    revision    BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- What telemetry keeps of each player for segments.
CREATE TABLE players (
    player_id  TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    sessions   BIGINT NOT NULL,
    purchases  BIGINT NOT NULL
);

-- Telemetry events, partitioned by `event_day`, the UTC day of
-- `event_time` (days since 1970-01-01): the hub creates each day's
-- partition before writing to it and drops whole days past retention. A
-- retry of an event (same player, event id and time) is one row.
CREATE TABLE telemetry_events (
    event_day       BIGINT NOT NULL,
    player_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    event_time      BIGINT NOT NULL,
    received_at     BIGINT NOT NULL,
    session_id      TEXT,
    client_version  TEXT,
    content_version TEXT,
    platform        TEXT,
    payload         TEXT NOT NULL,
    PRIMARY KEY (event_day, player_id, event_id)
) PARTITION BY RANGE (event_day);
CREATE INDEX telemetry_events_type_time ON telemetry_events (event_type, event_time);
CREATE INDEX telemetry_events_player_time ON telemetry_events (player_id, event_time);
