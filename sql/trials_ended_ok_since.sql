-- trials_ended_ok_since: ok trials (of one model when $model is set) that ENDED at or after
-- $from_us (epoch µs): finished_at, else started_at + latency. A trial that ends ok after a
-- model's expiry proves its runner served after it, whenever the trial started
-- (oasis_ops/modelstate.py). Only trials started at or after $started_from are read: $from minus
-- the longest trial worth counting, in the time column's own type so zone maps prune.
SELECT count(*) AS ended
FROM (
    SELECT
        columns(lambda c: c = $time_col) AS started_raw,
        columns(lambda c: c = $finished_col) AS finished_raw,
        columns(lambda c: c = $latency_col) AS latency_raw,
        columns(lambda c: c = $status_col) AS status_raw,
        columns(lambda c: c = $model_col) AS model_raw
    FROM (
        SELECT *,
            NULL::DOUBLE AS __oasis_no_latency,
            NULL::TIMESTAMPTZ AS __oasis_no_time,
            NULL::VARCHAR AS __oasis_no_text
        FROM query_table($table)
    )
    WHERE columns(lambda c: c = $time_col) >= $started_from
)
WHERE list_contains($ok_words, status_raw::VARCHAR)
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
  AND coalesce(
        epoch_us(finished_raw),
        epoch_us(started_raw) + TRY_CAST(round(CASE WHEN TRY_CAST(latency_raw AS DOUBLE) BETWEEN 0 AND 1e11
            THEN TRY_CAST(latency_raw AS DOUBLE) END * 1000) AS BIGINT)
      ) >= $from_us;
