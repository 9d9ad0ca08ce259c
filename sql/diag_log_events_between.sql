-- server.log slog rows of interest (every kind but 'other') with $since <= ts < $until, oldest
-- first; at most $max_rows (the newest).
SELECT * FROM (
    SELECT ts, level, msg, kind, detail
    FROM log_events WHERE ts >= $since AND ts < $until AND kind <> 'other'
    ORDER BY ts DESC LIMIT $max_rows
) ORDER BY ts;
