-- trials_completed_since: ok trials that started at or after $from (the watchdog's "are trials
-- completing", and the evidence that a model past its expiry is still serving), optionally for one
-- run and one model. $from has the time column's own type so zone maps prune.
SELECT count(*) AS completed
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $from
  AND outcome = 'ok'
  AND ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
  AND ($model IS NULL OR model_raw::VARCHAR = $model);
