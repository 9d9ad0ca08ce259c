-- Harness log rows (ok / timeout / error / evict) with $since <= ts < $until, oldest first; at
-- most $max_rows (the newest).
SELECT * FROM (
    SELECT ts, trial, kind, latency_ms, detail
    FROM harness_log WHERE ts >= $since AND ts < $until AND kind <> 'other'
    ORDER BY ts DESC LIMIT $max_rows
) ORDER BY ts;
