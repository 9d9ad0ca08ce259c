-- trials_ended_ok_since: ok trials (of one model when $model is set) that ENDED at or after
-- $from_us (epoch µs): finished_at, else started_at + latency. A trial that ends ok after a
-- model's expiry proves its runner served after it, whenever the trial started
-- (oasis_ops/modelstate.py). Only trials started at or after $started_from are read: $from minus
-- the longest trial worth counting, in the time column's own type so zone maps prune.
SELECT count(*) AS ended
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE started_raw >= $started_from
  AND outcome = 'ok'
  AND ($model IS NULL OR model_raw::VARCHAR = $model)
  AND coalesce(epoch_us(finished_raw), epoch_us(started_raw) + TRY_CAST(round(latency_ms * 1000) AS BIGINT)) >= $from_us;
