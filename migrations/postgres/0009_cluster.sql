-- More than one node: who drives what. A lease names its resource
-- ('deployment:<id>'), the node holding it, the fencing epoch (one more
-- at each takeover) and when it lapses (Unix ms on the database's clock).
-- A driver's every write checks, in its transaction, that it still holds
-- the lease under its epoch and that the lease has not lapsed: a node
-- paused past its lease writes nothing once another took it.
CREATE TABLE leases (
    resource   TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- One unfinished deployment per config, whichever node starts it: two
-- nodes starting one at once cannot both commit.
CREATE UNIQUE INDEX deployments_one_unfinished ON deployments (config_id)
    WHERE status IN ('Pending', 'AwaitingApproval', 'InProgress', 'Paused', 'RollingBack');
