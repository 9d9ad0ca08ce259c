-- The sidecar's schema version history; the highest version is the current schema.
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL, name VARCHAR NOT NULL);
