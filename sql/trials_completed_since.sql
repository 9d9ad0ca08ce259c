-- trials_completed_since: ok trials that started at or after $from (the watchdog's "are trials
-- completing"), optionally for one run. $from has the time column's own type so zone maps prune.
SELECT count(*) AS completed
FROM (
    SELECT *, NULL::VARCHAR AS __oasis_no_text
    FROM query_table($table)
)
WHERE columns(lambda c: c = $time_col) >= $from
  AND list_contains($ok_words, columns(lambda c: c = $status_col)::VARCHAR)
  AND ($run_id IS NULL OR columns(lambda c: c = $run_id_col)::VARCHAR = $run_id);
