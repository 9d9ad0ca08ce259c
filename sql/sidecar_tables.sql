-- Tables in the database's main schema (to tell an empty file, our sidecar, or someone else's DB).
SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' ORDER BY table_name;
