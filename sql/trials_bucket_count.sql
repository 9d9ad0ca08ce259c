-- trials_bucket_count: how many buckets of $width_us over [$from, $to) hold at least one trial (run
-- and model filters as in trials_rollup.sql). A sparse rollup asks first, so it materialises at most
-- max_buckets rows whatever the range's width.
SELECT count(DISTINCT epoch_us(started_raw) // $width_us) AS buckets
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model);
