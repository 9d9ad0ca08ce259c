-- trials_writer_schema: the canonical trial table (Contract 1), empty; TrialWriter creates the
-- table from this relation when it does not exist yet (so the name needs no SQL formatting).
SELECT
    NULL::BIGINT AS trial_id,
    NULL::VARCHAR AS run_id,
    NULL::VARCHAR AS model,
    NULL::TIMESTAMP AS started_at,
    NULL::TIMESTAMP AS finished_at,
    NULL::DOUBLE AS latency_ms,
    NULL::VARCHAR AS status,
    NULL::VARCHAR AS error,
    NULL::BIGINT AS prompt_tokens,
    NULL::BIGINT AS completion_tokens,
    NULL::DOUBLE AS queued_ms
LIMIT 0;
