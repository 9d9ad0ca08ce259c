-- trials_latency_values: the latencies over [$from, $to) in [$bin_lo, $bin_hi), ascending: the
-- few values around a percentile's rank, once trials_latency_histogram located its bins.
-- Parameters as in trials_rollup.sql.
SELECT latency_ms
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
  AND latency_ms >= $bin_lo AND latency_ms < $bin_hi
ORDER BY latency_ms;
