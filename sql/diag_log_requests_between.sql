-- Gin access-log rows with $since <= ts < $until, oldest first; at most $max_rows (the newest).
-- Used by the diagnosis (did the server answer in time?) and the post-mortem report.
SELECT * FROM (
    SELECT ts, status, latency_ms, method, path
    FROM log_requests WHERE ts >= $since AND ts < $until ORDER BY ts DESC LIMIT $max_rows
) ORDER BY ts;
