-- duck_memory_limit: set the connection's memory_limit (duck.trim lowers it to evict DuckDB's cached
-- blocks after a big scan, then restores the configured value).
SET memory_limit = $limit;
