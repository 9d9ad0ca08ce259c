-- trials_tables: user tables and views in the database, for "table not found" messages and auto-detection.
-- A table outside the main schema is named schema.table (query_table() reads that form).
SELECT CASE WHEN table_schema = 'main' THEN table_name ELSE table_schema || '.' || table_name END AS name
FROM information_schema.tables
WHERE table_schema NOT IN ('information_schema', 'pg_catalog')
  AND table_catalog = current_database()
ORDER BY table_schema <> 'main', name;
