-- The newest runner_samples row of each model seen since $since, one row per model.
SELECT * FROM runner_samples WHERE ts >= $since
QUALIFY row_number() OVER (PARTITION BY model ORDER BY ts DESC) = 1
ORDER BY model;
