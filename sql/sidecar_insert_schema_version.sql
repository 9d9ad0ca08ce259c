-- Records one applied migration.
INSERT INTO schema_version (version, applied_at, name) VALUES ($version, $applied_at, $name);
