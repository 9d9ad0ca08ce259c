-- trials_columns: columns of one table (by name: `table` in main, or `schema.table`) with their types, in table order.
SELECT column_name, data_type
FROM information_schema.columns
WHERE (table_name = $table AND table_schema = 'main' OR table_schema || '.' || table_name = $table)
  AND table_catalog = current_database()
ORDER BY ordinal_position;
