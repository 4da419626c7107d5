-- Live ops: segments and live events.

-- A segment: a rule over player attributes (`rule` holds its JSON) or a
-- list of player ids (`segment_members`). Built-in segments are not rows.
CREATE TABLE segments (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    rule        TEXT,
    revision    BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE segment_members (
    segment   TEXT NOT NULL REFERENCES segments (name) ON DELETE CASCADE,
    player_id TEXT NOT NULL,
    PRIMARY KEY (segment, player_id)
);

-- A live event: its current definition (`spec`, the request body as
-- accepted) and its progress, which its actor moves (state committed
-- before its effect). Names are never reused (`deleted_at`).
CREATE TABLE live_events (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    revision        BIGINT NOT NULL,
    spec            TEXT NOT NULL,
    state           TEXT NOT NULL,
    -- Occurrences that start before this instant are over.
    done_before_ms  BIGINT NOT NULL,
    -- An operator's `activate`: a window started ahead of the schedule.
    manual_start_ms BIGINT,
    manual_end_ms   BIGINT,
    paused_at_ms    BIGINT,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT
);

-- Every revision of an event's definition, never updated.
CREATE TABLE live_event_revisions (
    event_id   TEXT NOT NULL REFERENCES live_events (id),
    revision   BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, revision)
);

-- Each occurrence an event's actor started (region '' when the event's
-- schedule is not regionLocal): when, whether late, when and why it ended,
-- and the deployments that carry its server-wide overrides (JSON ids).
CREATE TABLE live_event_occurrences (
    event_id      TEXT NOT NULL REFERENCES live_events (id),
    start_ms      BIGINT NOT NULL,
    region        TEXT NOT NULL,
    end_ms        BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    late_ms       BIGINT NOT NULL,
    ended_at_ms   BIGINT,
    end_reason    TEXT,
    deployments   TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (event_id, start_ms, region)
);
