-- First and last swap-out counter readings of one host source since $since (the header's rate).
SELECT count(*) AS samples, min(ts) AS first_ts, max(ts) AS last_ts,
       arg_min(swapouts, ts) AS first_swapouts, arg_max(swapouts, ts) AS last_swapouts
FROM host_samples
WHERE ts >= $since AND source IS NOT DISTINCT FROM $source AND swapouts IS NOT NULL;
