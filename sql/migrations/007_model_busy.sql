-- Sidecar migration 007: whether a model Ollama calls Stopping was judged serving.
-- NOTE: a migration file may hold several DDL statements: the one allowed exception to "one
-- named statement per file"; applied with its schema_version row in one transaction.
--
-- model_samples.busy is true when the sampler had evidence that the model was serving past its
-- expiry (runner progress, trials ending ok), false otherwise, NULL in rows written before this
-- migration. `state = 'loaded'` alone cannot say so: in the first seconds after an expiry the
-- sampler also calls the model loaded while it checks, and that is no evidence of serving.
ALTER TABLE model_samples ADD COLUMN busy BOOLEAN;
