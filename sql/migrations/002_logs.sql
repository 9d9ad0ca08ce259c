-- Sidecar migration 002: tables for ingested server.log / runner log / harness log lines
-- (issue 6). NOTE: a migration file may hold several DDL statements: the one allowed exception
-- to "one named statement per file"; applied with its schema_version row in one transaction.
-- source_file + line_no say where each row came from (line_no is 1-based in that file).

-- Gin access-log lines: [GIN] <time> | <status> | <latency> | <client> | <method> "<path>".
CREATE TABLE log_requests (
    ts          TIMESTAMPTZ NOT NULL,
    status      INTEGER,
    latency_ms  DOUBLE,
    client      VARCHAR,
    method      VARCHAR,
    path        VARCHAR,
    source_file VARCHAR,
    line_no     BIGINT
);

-- slog lines. kind: 'server_config' | 'runner_start' | 'runner_started' | 'runner_gone' |
-- 'signal_killed' | 'oom' | 'load_request' | 'client_abort' | 'other'. detail: parsed key=values.
CREATE TABLE log_events (
    ts          TIMESTAMPTZ NOT NULL,
    level       VARCHAR,
    msg         VARCHAR,
    kind        VARCHAR NOT NULL,
    detail      JSON,
    source_file VARCHAR,
    line_no     BIGINT
);

-- llama-server timing lines (prompt eval / eval / total; image slice encode / decode), tied to
-- the nearest timed line for ts. Durations in milliseconds.
CREATE TABLE log_timings (
    ts              TIMESTAMPTZ,
    task_id         BIGINT,
    prompt_eval_ms  DOUBLE,
    prompt_tokens   BIGINT,
    eval_ms         DOUBLE,
    eval_tokens     BIGINT,
    total_ms        DOUBLE,
    image_encode_ms DOUBLE,
    image_decode_ms DOUBLE,
    source_file     VARCHAR,
    line_no         BIGINT
);

-- The harness's own log ("trial 12455 timed out after 1m0s ..."). kind: 'ok' | 'timeout' |
-- 'error' | 'evict' | 'other'.
CREATE TABLE harness_log (
    ts          TIMESTAMPTZ NOT NULL,
    trial       VARCHAR,
    kind        VARCHAR NOT NULL,
    latency_ms  DOUBLE,
    detail      VARCHAR,
    source_file VARCHAR,
    line_no     BIGINT
);

-- Where incremental ingestion stopped in each file. (inode, head_hash of the first bytes) detect
-- rotation; size smaller than offset_bytes detects truncation. Upserted by path.
CREATE TABLE log_offsets (
    path         VARCHAR PRIMARY KEY,
    inode        BIGINT,
    size         BIGINT,
    offset_bytes BIGINT,
    head_hash    VARCHAR,
    updated_at   TIMESTAMPTZ
);
