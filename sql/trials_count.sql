-- trials_count: rows in the trial table (cheap: DuckDB keeps the count in metadata).
SELECT count(*) AS trials FROM query_table($table);
