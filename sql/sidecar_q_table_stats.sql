-- Row count and time range of one sidecar table ($table comes from the fixed allow-list).
SELECT count(*) AS row_count, min(ts) AS first_ts, max(ts) AS last_ts FROM query_table($table);
