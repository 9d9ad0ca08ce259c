-- Rows of gpu_samples with $since <= ts < $until, oldest first; at most $max_rows (the newest ones).
SELECT * FROM (
    SELECT * FROM gpu_samples WHERE ts >= $since AND ts < $until ORDER BY ts DESC LIMIT $max_rows
) ORDER BY ts;
