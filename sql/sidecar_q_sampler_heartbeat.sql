-- The most recently active sampler run (zero or one row).
SELECT * FROM sampler_status ORDER BY last_tick_at DESC NULLS LAST, ts DESC LIMIT 1;
