-- Upserts sampler heartbeats (one row per sampler run); batch_rows has every column.
INSERT INTO sampler_status BY NAME SELECT * FROM batch_rows
ON CONFLICT (sampler_id) DO UPDATE SET
    ts = EXCLUDED.ts, pid = EXCLUDED.pid, host = EXCLUDED.host, started_at = EXCLUDED.started_at,
    last_tick_at = EXCLUDED.last_tick_at, ticks = EXCLUDED.ticks, errors = EXCLUDED.errors,
    last_error = EXCLUDED.last_error, interval_s = EXCLUDED.interval_s,
    stopped_at = EXCLUDED.stopped_at, version = EXCLUDED.version;
