-- trials_summary: one row over [$from, $to): counts by outcome, latencies present, max latency.
-- Percentiles come from trials_latency_histogram + trials_latency_values (exact, bounded
-- memory: a quantile over millions of values cannot spill). Parameters as in trials_rollup.sql.
SELECT
    count(*) AS trials,
    count(*) FILTER (WHERE outcome = 'ok') AS ok,
    count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
    count(*) FILTER (WHERE outcome = 'error') AS errors,
    count(latency_ms) AS with_latency,
    count(latency_any) - count(latency_ms) AS invalid_latency,
    max(latency_ms) AS max_ms
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND started_raw < $to
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model);
