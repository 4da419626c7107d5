-- Experiments over server metrics: per experiment, metric (its storage
-- key) and variant, the servers' reports split by variant, each an amount
-- x over a weight n (events over players, a histogram's sum over its
-- samples): how many reports, and the sums of x, n, x², n² and x·n — the
-- ratio Σx / Σn and its variance with reports as clusters. Added to in
-- batches.
CREATE TABLE experiment_server_sums (
    experiment_id TEXT NOT NULL REFERENCES experiments (id),
    metric        TEXT NOT NULL,
    variant       TEXT NOT NULL,
    reports       BIGINT NOT NULL,
    x             REAL NOT NULL,
    n             REAL NOT NULL,
    xx            REAL NOT NULL,
    nn            REAL NOT NULL,
    xn            REAL NOT NULL,
    PRIMARY KEY (experiment_id, metric, variant)
);
