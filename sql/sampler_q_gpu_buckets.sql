-- VRAM per GPU per bucket of $width_us microseconds over [$since, $until): the most memory used
-- in the bucket (the figure that says whether it ran out), the total, the highest utilisation,
-- and whether it was the demo's simulated GPU.
SELECT epoch_us(ts) // $width_us * $width_us AS bucket_us,
       gpu_index,
       any_value(name) AS name,
       max(memory_used_bytes) AS used_bytes,
       max(memory_total_bytes) AS total_bytes,
       max(utilization_percent) AS utilization_percent,
       bool_or(source = 'simulated') AS simulated
FROM gpu_samples
WHERE ts >= $since AND ts < $until
GROUP BY bucket_us, gpu_index
ORDER BY bucket_us, gpu_index;
