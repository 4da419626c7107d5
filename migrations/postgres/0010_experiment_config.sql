-- One started experiment per config, whichever node starts it: an
-- experiment's variant is the last layer of its config's resolution, so
-- two nodes starting two on one config at once cannot both commit.
ALTER TABLE experiments ADD COLUMN config TEXT;
UPDATE experiments SET config = CAST(spec AS JSON) ->> 'config';
CREATE UNIQUE INDEX experiments_one_started ON experiments (config)
    WHERE status IN ('Running', 'Paused');
