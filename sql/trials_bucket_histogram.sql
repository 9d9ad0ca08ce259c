-- trials_bucket_histogram: per bucket of $width_us over [$from, $to), trials counted per outcome and
-- per whole millisecond of latency (floor; NULL for no valid latency), with each group's max latency.
-- One scan gives a bucket's counts, its max, and where each percentile's rank falls, without
-- holding the values (oasis_ops.trials.bounded).
SELECT
    epoch_us(started_raw) // $width_us * $width_us AS bucket_us,
    floor(latency_ms)::BIGINT AS bin_ms,
    outcome,
    count(*) AS n,
    max(latency_ms) AS max_ms
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
GROUP BY ALL
ORDER BY bucket_us, bin_ms NULLS LAST;
