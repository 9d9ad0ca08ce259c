-- Sidecar migration 005 (issue 11): a model's state is judged from evidence.
-- NOTE: a migration file may hold several DDL statements: the one allowed exception to "one
-- named statement per file"; applied with its schema_version row in one transaction.
--
-- model_samples.state is now the console's judgement: `stopping` only when Ollama says Stopping
-- (expires_at in the past) and nothing shows the model serving; a model Ollama calls Stopping
-- while it keeps completing requests (its expiry went stale under overlapping requests) is
-- `loaded`. ollama_state keeps Ollama's own word (`loaded` | `stopping`), NULL in rows written
-- before this migration (their state was Ollama's word).
ALTER TABLE model_samples ADD COLUMN ollama_state VARCHAR;
