-- trials_summary: one row over [$from, $to): counts by outcome, latencies present, max latency.
-- Percentiles come from trials_latency_histogram + trials_latency_values (exact, bounded
-- memory: a quantile over millions of values cannot spill). Parameters as in trials_rollup.sql.
WITH raw AS (
    SELECT
        columns(lambda c: c = $time_col) AS started_raw,
        columns(lambda c: c = $latency_col) AS latency_raw,
        columns(lambda c: c = $finished_col) AS finished_raw,
        columns(lambda c: c = $status_col) AS status_raw
    FROM (
        SELECT *,
            NULL::DOUBLE AS __oasis_no_latency,
            NULL::TIMESTAMPTZ AS __oasis_no_time,
            NULL::VARCHAR AS __oasis_no_text
        FROM query_table($table)
    )
    WHERE columns(lambda c: c = $time_col) >= $from
      AND columns(lambda c: c = $time_col) < $to
      AND ($run_id IS NULL OR columns(lambda c: c = $run_id_col)::VARCHAR = $run_id)
      AND ($model IS NULL OR columns(lambda c: c = $model_col)::VARCHAR = $model)
), mapped AS (
    SELECT
        CASE WHEN $has_latency THEN TRY_CAST(latency_raw AS DOUBLE)
             ELSE (epoch_us(finished_raw) - epoch_us(started_raw)) / 1000.0
        END AS latency_any,
        -- NaN, ±inf, negative and absurd (over 1e11 ms, ~3 years) values are not latencies: left out of
        -- percentiles and max (as in trials_groups.sql)
        CASE WHEN isfinite(latency_any) AND latency_any BETWEEN 0 AND 1e11 THEN latency_any END AS latency_ms,
        CASE WHEN list_contains($ok_words, status_raw::VARCHAR) THEN 'ok'
             WHEN list_contains($timeout_words, status_raw::VARCHAR) THEN 'timeout'
             ELSE 'error'
        END AS outcome
    FROM raw
), totals AS (
    SELECT
        count(*) AS trials,
        count(*) FILTER (WHERE outcome = 'ok') AS ok,
        count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
        count(*) FILTER (WHERE outcome = 'error') AS errors,
        count(latency_ms) AS with_latency,
        count(latency_any) - count(latency_ms) AS invalid_latency,
        max(latency_ms) AS max_ms
    FROM mapped
)
SELECT trials, ok, timeouts, errors, with_latency, invalid_latency, max_ms
FROM totals;
