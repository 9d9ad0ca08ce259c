-- Current schema version of a sidecar (0 when schema_version is empty).
SELECT coalesce(max(version), 0) AS version FROM schema_version;
