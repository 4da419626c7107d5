-- One started experiment per config, whichever node starts it: an
-- experiment's variant is the last layer of its config's resolution, so
-- two nodes starting two on one config at once cannot both commit.
ALTER TABLE experiments ADD COLUMN config TEXT;
UPDATE experiments SET config = CAST(spec AS JSON) ->> 'config';
-- Nodes of a cluster before this rule could each start one on a config:
-- all but the latest started are finished, with the reason.
UPDATE experiments SET status = 'Finished', revision = revision + 1, finished_at = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT),
    status_reason = 'finished when one started experiment per config became the rule'
WHERE status IN ('Running', 'Paused') AND EXISTS (
    SELECT 1 FROM experiments o
    WHERE o.config = experiments.config AND o.status IN ('Running', 'Paused')
      AND (COALESCE(o.started_at, 0) > COALESCE(experiments.started_at, 0)
           OR (COALESCE(o.started_at, 0) = COALESCE(experiments.started_at, 0) AND o.id > experiments.id)));
CREATE UNIQUE INDEX experiments_one_started ON experiments (config)
    WHERE status IN ('Running', 'Paused');
