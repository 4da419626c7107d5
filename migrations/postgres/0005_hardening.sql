-- Hardening the edges.

-- A game server's id belongs to the API key that first registered it: a
-- hello for an id bound to another (live) key is refused. Bindings outlive
-- the server's row in game_servers (which a stale server loses after
-- hub.stale_after_secs), so a production id cannot be taken over while its
-- server is away; an admin releases one with DELETE /game-servers/{id}, and
-- bindings of servers gone for hub.server_id_binding_days expire.
CREATE TABLE game_server_bindings (
    server_id TEXT PRIMARY KEY,
    key_id    TEXT NOT NULL,
    bound_at  BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX game_server_bindings_by_last_seen ON game_server_bindings (last_seen);
INSERT INTO game_server_bindings (server_id, key_id, bound_at, last_seen)
    SELECT server_id, key_id, first_seen, last_seen FROM game_servers;

-- Every JSON Pointer ever sealed in a version of a config. A value once
-- secret stays sealed in every later version of the config (uploads,
-- rollbacks), whatever its schema says by then.
CREATE TABLE config_sealed_paths (
    config_id TEXT NOT NULL REFERENCES configs (id),
    path      TEXT NOT NULL,
    PRIMARY KEY (config_id, path)
);

-- One-off steps the hub runs at start-up, each once (backfills, the
-- RFC 8785 checksum upgrade), with what they did.
CREATE TABLE upkeep (
    name    TEXT PRIMARY KEY,
    done_at BIGINT NOT NULL,
    summary TEXT NOT NULL
);

-- The servers a rollback moves back, written with the move to RollingBack:
-- a hub restarted mid-rollback waits for them (per-server progress lives
-- in memory only, and acks reach game_servers a second late).
CREATE TABLE rollback_targets (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments (id),
    server_ids    TEXT NOT NULL
);
