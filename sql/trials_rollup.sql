-- trials_rollup: per bucket over [$from, $to): trial count, ok / timeouts / errors, exact latency
-- percentiles (quantile_cont = linear interpolation) and max, optionally filtered by run and model.
-- The column mapping, latency validity and outcome come from trials_mapped (trials_mapped_macro.sql).
-- $from/$to have the time column's own type (naive UTC for TIMESTAMP) so zone maps prune.
-- $only_buckets (bucket starts, epoch microseconds) restricts the result; empty = all buckets.
-- epoch_us() takes the raw column: naive TIMESTAMP counts as UTC, TIMESTAMPTZ is an instant;
-- a ::TIMESTAMPTZ cast would cost an ICU conversion per row (measured: ~2x the whole query).
WITH mapped AS (
    SELECT
        epoch_us(started_raw) // $width_us * $width_us AS bucket_us,
        latency_ms,
        outcome
    FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
    WHERE started_raw >= $from
      AND started_raw < $to
      AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
      AND ($model IS NULL OR model_raw::VARCHAR = $model)
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
