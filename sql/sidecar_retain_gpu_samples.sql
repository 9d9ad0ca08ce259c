-- sidecar_retain_gpu_samples: per GPU, readings older than $thin_before thinned to one per minute
-- (the minute's most used memory: the figure that matters for "did VRAM run out"), older than
-- $drop_before deleted.
DELETE FROM gpu_samples
WHERE ts < $drop_before
   OR (ts < $thin_before AND rowid NOT IN (
        SELECT arg_max(rowid, coalesce(memory_used_bytes, -1))
        FROM gpu_samples
        WHERE ts < $thin_before
        GROUP BY date_trunc('minute', ts), gpu_index, gpu_uuid
   ));
