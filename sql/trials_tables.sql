-- trials_tables: user tables and views in the database, for "table not found" messages and auto-detection.
SELECT table_name
FROM information_schema.tables
WHERE table_schema NOT IN ('information_schema', 'pg_catalog')
  AND table_catalog = current_database()
ORDER BY table_name;
