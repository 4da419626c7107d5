-- Experiments over server metrics: per experiment, metric and variant,
-- the observations folded from the servers' reports split by variant
-- (one per report), their sum and sum of squares. Added to in batches.
CREATE TABLE experiment_server_sums (
    experiment_id TEXT NOT NULL REFERENCES experiments (id),
    metric        TEXT NOT NULL,
    variant       TEXT NOT NULL,
    reports       BIGINT NOT NULL,
    total         REAL NOT NULL,
    squares       REAL NOT NULL,
    PRIMARY KEY (experiment_id, metric, variant)
);
