-- Sidecar migration 001: the core telemetry tables (DESIGN.md Contract 2).
-- NOTE: a migration file may hold several DDL statements: this is the one allowed exception to
-- "one named statement per file". oasis_ops.sidecar.schema applies the whole file, plus its
-- schema_version row, inside one transaction. Never edit a released migration: add a new one.
-- Every timestamp is TIMESTAMPTZ (UTC). Every column except ts is nullable: a probe that cannot
-- read a value leaves it NULL rather than inventing one.

-- Host memory, one row per sample. swapins/swapouts are the OS's cumulative page counters
-- (vm_stat Swapins/Swapouts on macOS, /proc/vmstat pswpin/pswpout on Linux); pressure is 0-100
-- (Linux PSI "some avg10"; macOS memorystatus level 1/2/4 mapped to 0/50/100).
CREATE TABLE host_samples (
    ts                  TIMESTAMPTZ NOT NULL,
    mem_total_bytes     BIGINT,
    mem_free_bytes      BIGINT,
    mem_available_bytes BIGINT,
    page_size           BIGINT,
    pages_free          BIGINT,
    pages_speculative   BIGINT,
    swap_total_bytes    BIGINT,
    swap_used_bytes     BIGINT,
    pageins             BIGINT,
    pageouts            BIGINT,
    swapins             BIGINT,
    swapouts            BIGINT,
    pressure            DOUBLE,
    source              VARCHAR   -- e.g. 'linux:/proc', 'macos:vm_stat'
);

-- One row per model per sample of /api/ps (and of the runner process serving it).
-- state: 'loaded' | 'stopping' (expires_at in the past) | 'gone'.
-- processor: the CPU/GPU split as `ollama ps` prints it, e.g. '100% GPU', '48%/52% CPU/GPU'.
-- (runner_pid, runner_create_time) is the runner's process identity; create_time in epoch s.
CREATE TABLE model_samples (
    ts                  TIMESTAMPTZ NOT NULL,
    model               VARCHAR NOT NULL,
    state               VARCHAR NOT NULL,
    expires_at          TIMESTAMPTZ,
    stopping_since      TIMESTAMPTZ,
    size_bytes          BIGINT,
    size_vram_bytes     BIGINT,
    processor           VARCHAR,
    context_length      BIGINT,
    runner_pid          BIGINT,
    runner_create_time  DOUBLE,
    runner_rss_bytes    BIGINT,
    runner_cpu_percent  DOUBLE,
    runner_threads      INTEGER
);

-- State transitions: model loaded/stopping/gone, runner PID changed, Ollama unreachable/back,
-- pressure level changed, sampler started/stopped. detail is free-form JSON.
CREATE TABLE events (
    ts     TIMESTAMPTZ NOT NULL,
    kind   VARCHAR NOT NULL,
    model  VARCHAR,
    detail JSON
);

-- Audit log of every recovery or control action, manual or automatic, refused ones included.
-- requested_by: 'cli' | 'dashboard' | 'watchdog' | ...; outcome: 'done' | 'failed' | 'refused' |
-- 'not_acknowledged' | 'stuck' | 'dry_run' | ...
CREATE TABLE actions (
    ts           TIMESTAMPTZ NOT NULL,
    action       VARCHAR NOT NULL,
    target       VARCHAR,
    params       JSON,
    requested_by VARCHAR,
    outcome      VARCHAR,
    detail       JSON,
    duration_ms  DOUBLE
);

-- Sampler heartbeat: one row per sampler run (sampler_id = host:pid:started_at), upserted on
-- every flush, so the dashboard can say "the sampler is down" when last_tick_at goes stale.
CREATE TABLE sampler_status (
    sampler_id   VARCHAR PRIMARY KEY,
    ts           TIMESTAMPTZ NOT NULL,
    pid          BIGINT,
    host         VARCHAR,
    started_at   TIMESTAMPTZ,
    last_tick_at TIMESTAMPTZ,
    ticks        BIGINT,
    errors       BIGINT,
    last_error   VARCHAR,
    interval_s   DOUBLE,
    stopped_at   TIMESTAMPTZ,
    version      VARCHAR
);
