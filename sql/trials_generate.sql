-- trials_generate: $n synthetic trials spread over [$start_us, $start_us + $span_us), seeded.
-- Healthy: latency lognormal around p50 4.1 s / p95 6.1 s, rare errors (NULL latency).
-- Inside $windows (list of {s, e} epoch-microsecond ranges): ~98% timeouts at 60 s, latency
-- NULL or 60000. Pseudo-random numbers come from hash(i, seed, k), so a seed gives the same
-- rows whatever the thread count.
WITH base AS (
    SELECT
        i,
        $start_us + CAST((i::HUGEINT * $span_us) // $n AS BIGINT)
            + CAST(((hash(i, $seed, 1) % 1000000) / 1000000.0) * ($span_us // $n) AS BIGINT) AS started_us,
        ((hash(i, $seed, 2) % 1000000) + 0.5) / 1000000.0 AS u1,
        ((hash(i, $seed, 3) % 1000000) + 0.5) / 1000000.0 AS u2,
        ((hash(i, $seed, 4) % 1000000) + 0.5) / 1000000.0 AS u3,
        ((hash(i, $seed, 5) % 1000000) + 0.5) / 1000000.0 AS u4
    FROM range($n) AS r(i)
), classified AS (
    SELECT
        *,
        len(list_filter($windows, lambda w: started_us >= w.s AND started_us < w.e)) > 0 AS in_window,
        -- standard normal from two uniforms (Box-Muller)
        sqrt(-2.0 * ln(u1)) * cos(2.0 * pi() * u2) AS z
    FROM base
), shaped AS (
    SELECT
        i,
        started_us,
        CASE
            WHEN in_window AND u3 < 0.98 THEN 'timeout'
            WHEN NOT in_window AND u3 < $error_rate THEN 'error'
            WHEN NOT in_window AND u3 < $error_rate + $timeout_rate THEN 'timeout'
            ELSE 'ok'
        END AS status,
        CASE
            WHEN in_window AND u3 < 0.98 THEN CASE WHEN u4 < 0.5 THEN NULL ELSE 60000.0 END
            WHEN NOT in_window AND u3 < $error_rate THEN NULL
            WHEN NOT in_window AND u3 < $error_rate + $timeout_rate THEN 60000.0
            WHEN in_window THEN round(20000.0 + 40000.0 * u4, 1)
            ELSE round($p50_ms * exp($sigma * z), 1)
        END AS latency_ms
    FROM classified
)
SELECT
    $first_id + i AS trial_id,
    $run_id::VARCHAR AS run_id,
    $model::VARCHAR AS model,
    make_timestamp(started_us) AS started_at,
    make_timestamp(started_us + CAST(1000 * coalesce(latency_ms, CASE WHEN status = 'timeout' THEN 60000.0 ELSE 150.0 END) AS BIGINT)) AS finished_at,
    latency_ms,
    status,
    CASE status
        WHEN 'timeout' THEN 'timed out after 1m0s (litellm.Timeout)'
        WHEN 'error' THEN 'litellm.APIConnectionError: connection reset by peer'
    END AS error
FROM shaped
ORDER BY started_us;
