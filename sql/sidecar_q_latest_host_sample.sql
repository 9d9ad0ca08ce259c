-- The newest host sample (zero or one row).
SELECT * FROM host_samples ORDER BY ts DESC LIMIT 1;
