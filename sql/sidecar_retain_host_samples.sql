-- sidecar_retain_host_samples: samples older than $thin_before thinned to one per minute (the one
-- with the least free memory: a dip is what a post-mortem looks for; the counters are cumulative, so
-- rates over minutes survive), and samples older than $drop_before deleted.
DELETE FROM host_samples
WHERE ts < $drop_before
   OR (ts < $thin_before AND rowid NOT IN (
        SELECT coalesce(arg_min(rowid, mem_free_bytes), min(rowid))
        FROM host_samples
        WHERE ts < $thin_before
        GROUP BY date_trunc('minute', ts), source
   ));
