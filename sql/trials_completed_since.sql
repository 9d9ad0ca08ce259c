-- trials_completed_since: ok trials that started at or after $from (the watchdog's "are trials
-- completing", and the evidence that a model past its expiry is still serving), optionally for one
-- run and one model. $from has the time column's own type so zone maps prune.
SELECT count(*) AS completed
FROM (
    SELECT *, NULL::VARCHAR AS __oasis_no_text
    FROM query_table($table)
)
WHERE columns(lambda c: c = $time_col) >= $from
  AND list_contains($ok_words, columns(lambda c: c = $status_col)::VARCHAR)
  AND ($run_id IS NULL OR columns(lambda c: c = $run_id_col)::VARCHAR = $run_id)
  AND ($model IS NULL OR columns(lambda c: c = $model_col)::VARCHAR = $model);
