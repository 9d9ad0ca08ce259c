-- trials_latency_histogram: latencies over [$from, $to) counted per whole millisecond (floor),
-- ascending: a small table (one row per distinct ms) from which the rank of any percentile
-- is located without holding every value. Parameters as in trials_rollup.sql.
SELECT floor(latency_ms)::BIGINT AS bin_ms, count(*) AS n
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
  AND latency_ms IS NOT NULL
GROUP BY bin_ms
ORDER BY bin_ms;
