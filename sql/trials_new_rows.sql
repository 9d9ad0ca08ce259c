-- trials_new_rows: start time, run and model of the rows appended after the first $skip_rows
-- (insertion order), at most $max_rows of them: what an incremental refresh has to fold in.
SELECT
    epoch_us(columns(lambda c: c = $time_col)) AS started_us,
    columns(lambda c: c = $run_id_col)::VARCHAR AS run_id,
    columns(lambda c: c = $model_col)::VARCHAR AS model
FROM (
    SELECT *, NULL::VARCHAR AS __oasis_no_text
    FROM query_table($table)
    OFFSET $skip_rows
)
LIMIT $max_rows;
