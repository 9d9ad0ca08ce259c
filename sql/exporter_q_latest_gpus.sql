-- The newest gpu_samples row of each GPU read since $since (the exporter's GPU gauges).
SELECT * FROM gpu_samples
WHERE ts >= $since
QUALIFY row_number() OVER (PARTITION BY gpu_index ORDER BY ts DESC) = 1
ORDER BY gpu_index;
