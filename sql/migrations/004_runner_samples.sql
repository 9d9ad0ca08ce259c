-- Sidecar migration 004 (issue 10, point 6): llama-server runners as a signal source.
-- NOTE: a migration file may hold several DDL statements: the one allowed exception to "one
-- named statement per file"; applied with its schema_version row in one transaction.
--
-- From Ollama 0.30 each loaded model is served by a `llama-server` child process; the sampler
-- reads its GET /slots (and GET /metrics, which answers only when the runner was started with
-- --metrics: Ollama does not pass it, so those columns are usually NULL) every
-- process_interval_s, and writes one row per runner per read. Every column except ts, model and
-- reachable is nullable: NULL means "not known", never zero.
--
-- (runner_pid, runner_create_time) is the runner's process identity, as in model_samples.
-- reachable: the runner answered GET /slots within the read's total timeout (1 s), whatever it
--   answered; false for a timeout (a runner stuck in a decode, or SIGSTOPped: the kernel accepts
--   the connection, nobody answers) or a refused connection. error: why /slots gave nothing
--   usable (timeout, refused, HTTP error, junk, too big); /metrics problems other than 501 too.
-- response_ms: how long the read took (/slots and /metrics together).
-- slots_total, slots_busy: slots, and those with is_processing. tokens_in_flight: tokens
--   generated so far by the tasks of the busy slots (next_token[0].n_decoded).
-- requests_processing, requests_deferred, tokens_predicted_total: llamacpp:* from /metrics
--   (NULL when metrics_enabled is not true). metrics_enabled: false when /metrics answered 501.
-- tokens_per_s: tokens generated per second since the runner's previous row: from the
--   tokens_predicted_total counter when /metrics answers (rate_source 'metrics'), else from the
--   n_decoded increase of the slots between the two reads (rate_source 'slots'; the last tokens
--   of a task that ended between two reads are not seen, so it can undercount).
-- stalled_for_s: the longest time a busy slot has gone without progress (same task, same
--   n_decoded and prompt progress), counted from the first read that saw it so; 0 when every
--   busy slot moved since the last read; NULL when no slot is busy or /slots gave nothing.
-- stalled_slots: busy slots without progress for at least the sampler's threshold (30 s); the
--   events runner_no_progress / runner_progress mark when that starts and ends.
-- not_answering_for_s: how long /slots has gone unanswered (from the first failed read in a
--   row); NULL while it answers. Events runner_not_answering / runner_answering past the threshold.
-- slots: per slot {id, busy, id_task, n_ctx, n_prompt_tokens, n_decoded, n_remain, no_progress_s}.
CREATE TABLE runner_samples (
    ts                     TIMESTAMPTZ NOT NULL,
    model                  VARCHAR NOT NULL,
    runner_pid             BIGINT,
    runner_create_time     DOUBLE,
    runner_port            INTEGER,
    reachable              BOOLEAN NOT NULL,
    error                  VARCHAR,
    response_ms            DOUBLE,
    slots_total            INTEGER,
    slots_busy             INTEGER,
    tokens_in_flight       BIGINT,
    requests_processing    INTEGER,
    requests_deferred      INTEGER,
    tokens_predicted_total BIGINT,
    metrics_enabled        BOOLEAN,
    tokens_per_s           DOUBLE,
    rate_source            VARCHAR,  -- 'metrics' | 'slots'
    stalled_for_s          DOUBLE,
    stalled_slots          INTEGER,
    not_answering_for_s    DOUBLE,
    slots                  JSON
);
