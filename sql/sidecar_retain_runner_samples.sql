-- sidecar_retain_runner_samples: per model, runner readings older than $thin_before thinned to one
-- per minute (the minute's last: its counters are cumulative), older than $drop_before deleted.
DELETE FROM runner_samples
WHERE ts < $drop_before
   OR (ts < $thin_before AND rowid NOT IN (
        SELECT max(rowid)
        FROM runner_samples
        WHERE ts < $thin_before
        GROUP BY date_trunc('minute', ts), model
   ));
