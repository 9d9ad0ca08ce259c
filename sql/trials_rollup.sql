-- trials_rollup: per bucket over [$from, $to): trial count, ok / timeouts / errors, exact latency
-- percentiles (quantile_cont = linear interpolation) and max, optionally filtered by run and model.
-- Identifiers arrive as parameters: query_table($table) and COLUMNS(lambda c: c = $..._col).
-- Absent optional columns are mapped to the typed NULL placeholders added by the inner SELECT.
-- $from/$to have the time column's own type (naive UTC for TIMESTAMP) so zone maps prune.
-- $only_buckets (bucket starts, epoch microseconds) restricts the result; empty = all buckets.
-- epoch_us() takes the raw column: naive TIMESTAMP counts as UTC, TIMESTAMPTZ is an instant;
-- a ::TIMESTAMPTZ cast would cost an ICU conversion per row (measured: ~2x the whole query).
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
        epoch_us(started_raw) // $width_us * $width_us AS bucket_us,
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
), per_bucket AS (
SELECT
    bucket_us,
    count(*) AS trials,
    count(*) FILTER (WHERE outcome = 'ok') AS ok,
    count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
    count(*) FILTER (WHERE outcome = 'error') AS errors,
    quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS percentiles,
    max(latency_ms) AS max_ms
FROM mapped
WHERE len($only_buckets) = 0 OR list_contains($only_buckets, bucket_us)
GROUP BY bucket_us
)
SELECT
    bucket_us, trials, ok, timeouts, errors,
    percentiles[1] AS p50_ms, percentiles[2] AS p95_ms, percentiles[3] AS p99_ms, max_ms
FROM per_bucket
ORDER BY bucket_us;
