-- Sidecar migration 006 (issue 14): early warnings, one row per change of an episode.
-- NOTE: a migration file may hold several DDL statements: the one allowed exception to "one
-- named statement per file"; applied with its schema_version row in one transaction.
--
-- An episode (kind, subject, first_seen) is `raised` once and `cleared` once; a raised row with
-- no cleared row is active. ts is when the change happened; first_seen when the condition first
-- held; eta the forecast moment (memory exhaustion), or NULL; action the recovery as the CLI names
-- it (`concurrency 1`, `pause`, `recover MODEL`); evidence the numbers seen, as JSON.
CREATE TABLE warnings (
    ts          TIMESTAMPTZ NOT NULL,
    change      VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,
    subject     VARCHAR,
    severity    VARCHAR,
    first_seen  TIMESTAMPTZ NOT NULL,
    eta         TIMESTAMPTZ,
    message     VARCHAR,
    evidence    JSON,
    action      VARCHAR
);
