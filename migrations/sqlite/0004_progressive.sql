-- Progressive deployments: what each deployment was asked to do, where it
-- stands (persisted before its effects go out), its rollback record, and
-- the per-minute player-metric aggregates and player feedback kept 30 days.

-- The request as the engine understood it (strategy options, scope, rules), JSON.
ALTER TABLE deployments ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';
-- InProgress / Paused: the phase (canary step, rolling batch, region index).
ALTER TABLE deployments ADD COLUMN phase BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN phase_started_at BIGINT;
-- Rolling: servers with a cohort bucket below this have the new revision.
ALTER TABLE deployments ADD COLUMN cover_bucket BIGINT;
ALTER TABLE deployments ADD COLUMN approved_by TEXT;
-- Why and when it rolled back, JSON.
ALTER TABLE deployments ADD COLUMN rollback TEXT;
ALTER TABLE deployments ADD COLUMN updated_at BIGINT;
-- 1 when regions or tags narrowed it: once completed it stays a layer over
-- the config's active revision for the servers it covered.
ALTER TABLE deployments ADD COLUMN scoped BIGINT NOT NULL DEFAULT 0;

-- Player metrics per minute, region, deployment ('' for none) and cohort.
-- Several rows may share a key (a restart inside a minute); readers sum them.
CREATE TABLE metric_minutes (
    minute            BIGINT NOT NULL,
    region            TEXT NOT NULL,
    deployment_id     TEXT NOT NULL,
    cohort            TEXT NOT NULL,
    reports           BIGINT NOT NULL,
    players           BIGINT NOT NULL,
    sessions_started  BIGINT NOT NULL,
    sessions_ended    BIGINT NOT NULL,
    churned           BIGINT NOT NULL,
    crashes           BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    requests          BIGINT NOT NULL,
    complaints        BIGINT NOT NULL,
    purchases         BIGINT NOT NULL,
    -- Histograms as JSON [[value, count], ...].
    latency_ms        TEXT NOT NULL,
    session_secs      TEXT NOT NULL,
    fps               TEXT NOT NULL
);
CREATE INDEX metric_minutes_by_minute ON metric_minutes (minute);

CREATE TABLE player_feedback (
    id            TEXT PRIMARY KEY,
    received_at   BIGINT NOT NULL,
    server_id     TEXT,
    region        TEXT,
    deployment_id TEXT,
    player_id     TEXT,
    kind          TEXT NOT NULL,
    rating        BIGINT,
    category      TEXT,
    message       TEXT,
    submitted_by  TEXT NOT NULL
);
CREATE INDEX player_feedback_by_time ON player_feedback (received_at);
