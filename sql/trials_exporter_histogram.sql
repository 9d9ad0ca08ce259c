-- trials_exporter_histogram: every trial by model and outcome, with its latency bucket for the
-- Prometheus exporter's oasis_trial_latency_seconds histogram (oasis_ops/exporter/trialstats.py
-- holds the same upper bounds, in seconds, as LATENCY_BUCKETS_S: 0.25 0.5 1 2 5 10 20 30 60 120
-- 300 600; bucket 12 is +Inf only). Trials without a usable latency are counted, in no bucket
-- (bucket NULL). Whole-table: the exporter caches it between scrapes.
SELECT model_raw::VARCHAR AS model,
       outcome,
       CASE WHEN latency_ms IS NULL THEN NULL
            WHEN latency_ms <= 250 THEN 0
            WHEN latency_ms <= 500 THEN 1
            WHEN latency_ms <= 1000 THEN 2
            WHEN latency_ms <= 2000 THEN 3
            WHEN latency_ms <= 5000 THEN 4
            WHEN latency_ms <= 10000 THEN 5
            WHEN latency_ms <= 20000 THEN 6
            WHEN latency_ms <= 30000 THEN 7
            WHEN latency_ms <= 60000 THEN 8
            WHEN latency_ms <= 120000 THEN 9
            WHEN latency_ms <= 300000 THEN 10
            WHEN latency_ms <= 600000 THEN 11
            ELSE 12
       END AS bucket,
       count(*) AS trials,
       sum(latency_ms) AS latency_ms_sum
FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
WHERE ($run_id IS NULL OR run_id_raw::VARCHAR = $run_id)
GROUP BY ALL;
