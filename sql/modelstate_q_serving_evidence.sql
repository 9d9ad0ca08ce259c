-- The newest moments the sampler saw $model serving since $since: a sample it judged busy while
-- Ollama said Stopping (a stale expiry; not one it only called loaded while checking), and a read
-- of its llama-server runner with tokens decoded. Two rows (model, runner); `at` is NULL where
-- nothing was seen.
SELECT 'model' AS what, max(ts) AS at FROM model_samples
WHERE model = $model AND ts >= $since AND state = 'loaded' AND ollama_state = 'stopping' AND busy
UNION ALL
SELECT 'runner' AS what, max(ts) AS at FROM runner_samples
WHERE model = $model AND ts >= $since AND tokens_per_s > 0;
