-- The newest host sample at or after $since (zero or one row); cheap on a big table because
-- rows arrive in time order and DuckDB's zone maps skip everything older.
SELECT * FROM host_samples WHERE ts >= $since ORDER BY ts DESC LIMIT 1;
