-- trials_token_totals: prompt and completion tokens per model, for trial tables that record them
-- (the proxy's and the litellm callback's optional prompt_tokens / completion_tokens columns; run
-- only when both exist). The exporter's oasis_tokens_total.
SELECT model_raw::VARCHAR AS model,
       sum(TRY_CAST(prompt_raw AS BIGINT)) AS prompt_tokens,
       sum(TRY_CAST(completion_raw AS BIGINT)) AS completion_tokens
FROM (
    SELECT columns(lambda c: c = $model_col) AS model_raw,
           columns(lambda c: c = 'prompt_tokens') AS prompt_raw,
           columns(lambda c: c = 'completion_tokens') AS completion_raw
    FROM (SELECT *, NULL::VARCHAR AS __oasis_no_text FROM query_table($table))
)
GROUP BY ALL;
