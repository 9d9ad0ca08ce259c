-- trials_latency_histogram: latencies over [$from, $to) counted per whole millisecond (floor),
-- ascending: a small table (one row per distinct ms) from which the rank of any percentile
-- is located without holding every value. Parameters as in trials_rollup.sql.
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
), latencies AS (
    SELECT
        CASE WHEN $has_latency THEN TRY_CAST(latency_raw AS DOUBLE)
             ELSE (epoch_us(finished_raw) - epoch_us(started_raw)) / 1000.0
        END AS latency_any,
        -- NaN, ±inf, negative and absurd (over 1e11 ms, ~3 years) values are not latencies: left out of
        -- percentiles and max (as in trials_groups.sql)
        CASE WHEN isfinite(latency_any) AND latency_any BETWEEN 0 AND 1e11 THEN latency_any END AS latency_ms
    FROM raw
)
SELECT floor(latency_ms)::BIGINT AS bin_ms, count(*) AS n
FROM latencies
WHERE latency_ms IS NOT NULL
GROUP BY bin_ms
ORDER BY bin_ms;
