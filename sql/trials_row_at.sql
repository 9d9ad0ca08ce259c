-- trials_row_at: fingerprint (start time, status) of the row at insertion position $position.
-- A table that only grew still has the same row there; anything else means rows were rewritten.
-- Without ORDER BY, DuckDB returns rows in insertion order (preserve_insertion_order is on).
SELECT
    epoch_us(columns(lambda c: c = $time_col)) AS started_us,
    columns(lambda c: c = $status_col)::VARCHAR AS status
FROM query_table($table)
LIMIT 1 OFFSET $position;
