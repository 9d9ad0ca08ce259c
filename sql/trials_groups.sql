-- trials_groups: per (run_id, model) first and last start time, the latest end, trials, ok and
-- failures, over the rows after the first $skip_rows (0 = whole table). The result merges with an
-- earlier one, so a live refresh only aggregates the rows appended since.
-- last_end_us is when the last trial ended: finished_at, else started_at + latency, else started_at
-- (never before started_at); oasis_ops/trials/span.py defines a run's start, end and duration on it.
WITH raw AS (
    SELECT
        columns(lambda c: c = $time_col) AS started_raw,
        columns(lambda c: c = $finished_col) AS finished_raw,
        columns(lambda c: c = $latency_col) AS latency_raw,
        columns(lambda c: c = $status_col) AS status_raw,
        columns(lambda c: c = $run_id_col) AS run_id_raw,
        columns(lambda c: c = $model_col) AS model_raw
    FROM (
        SELECT *,
            NULL::DOUBLE AS __oasis_no_latency,
            NULL::TIMESTAMPTZ AS __oasis_no_time,
            NULL::VARCHAR AS __oasis_no_text
        FROM query_table($table)
        OFFSET $skip_rows
    )
)
SELECT
    run_id_raw::VARCHAR AS run_id,
    model_raw::VARCHAR AS model,
    min(epoch_us(started_raw)) AS first_us,
    max(epoch_us(started_raw)) AS last_us,
    max(greatest(
        epoch_us(started_raw),
        coalesce(
            epoch_us(finished_raw),
            epoch_us(started_raw) + TRY_CAST(round(CASE WHEN TRY_CAST(latency_raw AS DOUBLE) BETWEEN 0 AND 1e11
                THEN TRY_CAST(latency_raw AS DOUBLE) END * 1000) AS BIGINT),
            epoch_us(started_raw)
        )
    )) AS last_end_us,
    count(*) AS trials,
    count(*) FILTER (WHERE list_contains($ok_words, status_raw::VARCHAR)) AS ok
FROM raw
GROUP BY ALL;
