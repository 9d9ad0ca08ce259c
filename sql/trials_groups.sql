-- trials_groups: per (run_id, model) first and last start time, the latest end, trials, ok and
-- failures, and the trials without a start time (untimed: on no time axis), over the rows after the first $skip_rows (0 = whole table). The result merges with an
-- earlier one, so a live refresh only aggregates the rows appended since.
-- last_end_us is when the last trial ended: finished_at, else started_at + latency, else started_at
-- (never before started_at); oasis_ops/trials/span.py defines a run's start, end and duration on it.
SELECT
    run_id_raw::VARCHAR AS run_id,
    model_raw::VARCHAR AS model,
    min(epoch_us(started_raw)) AS first_us,
    max(epoch_us(started_raw)) AS last_us,
    max(greatest(
        epoch_us(started_raw),
        coalesce(epoch_us(finished_raw), epoch_us(started_raw) + TRY_CAST(round(latency_ms * 1000) AS BIGINT), epoch_us(started_raw))
    )) AS last_end_us,
    count(*) AS trials,
    count(*) FILTER (WHERE outcome = 'ok') AS ok,
    count(*) FILTER (WHERE started_raw IS NULL) AS untimed
FROM (
    SELECT * FROM trials_mapped($table, $time_col, $finished_col, $latency_col, $status_col, $run_id_col, $model_col, $has_latency, $ok_words, $timeout_words)
    OFFSET $skip_rows
)
GROUP BY ALL;
