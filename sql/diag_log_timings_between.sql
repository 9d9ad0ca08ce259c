-- llama-server timing rows (prompt eval, eval, total, image encode/decode) with $since <= ts <
-- $until, oldest first; at most $max_rows (the newest). Rows without a time are skipped.
SELECT * FROM (
    SELECT ts, task_id, prompt_eval_ms, prompt_tokens, eval_ms, eval_tokens, total_ms,
           image_encode_ms, image_decode_ms
    FROM log_timings WHERE ts >= $since AND ts < $until ORDER BY ts DESC LIMIT $max_rows
) ORDER BY ts;
