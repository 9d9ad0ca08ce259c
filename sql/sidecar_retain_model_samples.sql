-- sidecar_retain_model_samples: per model, samples older than $thin_before thinned to one per minute
-- (a Stopping one if the minute had one, else the minute's last), older than $drop_before deleted.
-- State changes are kept in full in `events`.
DELETE FROM model_samples
WHERE ts < $drop_before
   OR (ts < $thin_before AND rowid NOT IN (
        SELECT coalesce(arg_max(rowid, (state = 'stopping', ts)), max(rowid))
        FROM model_samples
        WHERE ts < $thin_before
        GROUP BY date_trunc('minute', ts), model
   ));
