-- Host telemetry per bucket of $width_us microseconds over [$since, $until): the lowest free
-- memory (bytes, pages) and available memory, the highest pressure, and swap-outs per minute
-- (counter increase over sampled time, per source; a counter reset or a gap over 2 min is skipped).
WITH samples AS (
    SELECT ts, source, mem_free_bytes, mem_available_bytes, pages_free, page_size, pressure,
           swapouts - lag(swapouts) OVER w AS swapouts_delta,
           epoch(ts) - epoch(lag(ts) OVER w) AS dt_s
    FROM host_samples
    WHERE ts >= $since - INTERVAL 2 MINUTE AND ts < $until
    WINDOW w AS (PARTITION BY source ORDER BY ts)
)
SELECT epoch_us(ts) // $width_us * $width_us AS bucket_us,
       min(mem_free_bytes) AS mem_free_bytes,
       min(mem_available_bytes) AS mem_available_bytes,
       min(pages_free) AS pages_free,
       max(page_size) AS page_size,
       sum(swapouts_delta) FILTER (WHERE swapouts_delta >= 0 AND dt_s <= 120) * 60.0
           / nullif(sum(dt_s) FILTER (WHERE swapouts_delta >= 0 AND dt_s <= 120), 0) AS swapouts_per_min,
       max(pressure) AS pressure,
       bool_or(source = 'simulated') AS simulated
FROM samples
WHERE ts >= $since
GROUP BY bucket_us
ORDER BY bucket_us;
