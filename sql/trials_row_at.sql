-- trials_row_at: fingerprint (every column) of the row at insertion position $position. A table
-- that only grew still has the same row there; anything else means rows were rewritten. Every
-- column, not only the start time and status: a rewrite that kept those two but changed the run,
-- model or latency of that row must not pass for an append.
-- Without ORDER BY, DuckDB returns rows in insertion order (preserve_insertion_order is on).
SELECT *
FROM query_table($table)
LIMIT 1 OFFSET $position;
