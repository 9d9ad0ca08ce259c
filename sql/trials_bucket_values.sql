-- trials_bucket_values: the latencies of the (bucket, millisecond bin) pairs in $keys, each key
-- (bucket_us - $from_us) // $width_us * 100000000000 + bin_ms (bins are below 1e11 ms), ascending
-- per bucket: the few values around each percentile's rank (oasis_ops.trials.bounded).
SELECT
    epoch_us(started_raw) // $width_us * $width_us AS bucket_us,
    latency_ms
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
  AND latency_ms IS NOT NULL
  AND list_contains($keys, (epoch_us(started_raw) // $width_us * $width_us - $from_us) // $width_us * 100000000000
                            + floor(latency_ms)::BIGINT)
ORDER BY bucket_us, latency_ms;
