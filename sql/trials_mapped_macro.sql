-- trials_mapped_macro: the trial table's column mapping (Contract 1) in ONE place. Creates the
-- temporary table macro trials_mapped(...) that every trials_*.sql statement reads from; run once
-- per connection (oasis_ops.trials.source opens each snapshot with it).
-- Identifiers arrive as arguments: query_table(tbl) and COLUMNS(lambda c: c = ..._col). Absent
-- optional columns map to the typed NULL placeholders added by the innermost SELECT
-- (oasis_ops.trials.mapping: NO_LATENCY, NO_TIME, NO_TEXT).
-- Columns: started_raw, finished_raw, latency_raw, status_raw, run_id_raw, model_raw (as stored);
--   latency_any: the latency column as DOUBLE, else finished - started in ms;
--   latency_ms: latency_any when it is a latency: NaN, ±inf, negative and absurd values (over
--     1e11 ms, ~3 years) are not, and are left out of percentiles, max and end times;
--   outcome: 'ok' / 'timeout' / 'error' by the status words.
-- Filters on started_raw reach the scan (zone maps prune): callers compare it with a bound in the
-- time column's own type. epoch_us() takes the raw column (naive TIMESTAMP counts as UTC).
CREATE OR REPLACE TEMP MACRO trials_mapped(
    tbl, time_col, finished_col, latency_col, status_col, run_id_col, model_col, has_latency, ok_words, timeout_words
) AS TABLE
SELECT
    started_raw, finished_raw, latency_raw, status_raw, run_id_raw, model_raw, latency_any,
    CASE WHEN isfinite(latency_any) AND latency_any BETWEEN 0 AND 1e11 THEN latency_any END AS latency_ms,
    CASE WHEN list_contains(ok_words, status_raw::VARCHAR) THEN 'ok'
         WHEN list_contains(timeout_words, status_raw::VARCHAR) THEN 'timeout'
         ELSE 'error'
    END AS outcome
FROM (
    SELECT *,
        CASE WHEN has_latency THEN TRY_CAST(latency_raw AS DOUBLE)
             ELSE (epoch_us(finished_raw) - epoch_us(started_raw)) / 1000.0
        END AS latency_any
    FROM (
        SELECT
            columns(lambda c: c = time_col) AS started_raw,
            columns(lambda c: c = finished_col) AS finished_raw,
            columns(lambda c: c = latency_col) AS latency_raw,
            columns(lambda c: c = status_col) AS status_raw,
            columns(lambda c: c = run_id_col) AS run_id_raw,
            columns(lambda c: c = model_col) AS model_raw
        FROM (
            SELECT *,
                NULL::DOUBLE AS __oasis_no_latency,
                NULL::TIMESTAMPTZ AS __oasis_no_time,
                NULL::VARCHAR AS __oasis_no_text
            FROM query_table(tbl)
        )
    )
);
