-- trials_groups: per (run_id, model) first and last start time, trials, ok and failures, over the
-- rows after the first $skip_rows (0 = whole table). The result merges with an earlier one, so
-- a live refresh only aggregates the rows appended since.
WITH raw AS (
    SELECT
        columns(lambda c: c = $time_col) AS started_raw,
        columns(lambda c: c = $status_col) AS status_raw,
        columns(lambda c: c = $run_id_col) AS run_id_raw,
        columns(lambda c: c = $model_col) AS model_raw
    FROM (
        SELECT *, NULL::VARCHAR AS __oasis_no_text
        FROM query_table($table)
        OFFSET $skip_rows
    )
)
SELECT
    run_id_raw::VARCHAR AS run_id,
    model_raw::VARCHAR AS model,
    min(epoch_us(started_raw)) AS first_us,
    max(epoch_us(started_raw)) AS last_us,
    count(*) AS trials,
    count(*) FILTER (WHERE list_contains($ok_words, status_raw::VARCHAR)) AS ok
FROM raw
GROUP BY ALL;
