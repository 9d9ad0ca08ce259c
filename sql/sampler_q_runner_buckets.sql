-- llama-server runner signals per bucket of $width_us microseconds over [$since, $until), summed
-- over the runners serving at the time: mean tokens/s, most busy slots and slots, longest time a
-- busy slot went without progress, slots without progress past the sampler's threshold, and
-- whether some runner did not answer /slots at all.
WITH per_runner AS (
    SELECT epoch_us(ts) // $width_us * $width_us AS bucket_us, model, runner_pid,
           avg(tokens_per_s) AS tokens_per_s,
           max(slots_busy) AS slots_busy,
           max(slots_total) AS slots_total,
           max(tokens_in_flight) AS tokens_in_flight,
           max(requests_deferred) AS requests_deferred,
           max(stalled_for_s) AS stalled_for_s,
           max(stalled_slots) AS stalled_slots,
           max(not_answering_for_s) AS not_answering_for_s,
           bool_or(NOT reachable) AS not_answering
    FROM runner_samples
    WHERE ts >= $since AND ts < $until
    GROUP BY ALL
)
SELECT bucket_us,
       sum(tokens_per_s) AS tokens_per_s,
       sum(slots_busy) AS slots_busy,
       sum(slots_total) AS slots_total,
       sum(tokens_in_flight) AS tokens_in_flight,
       sum(requests_deferred) AS requests_deferred,
       max(stalled_for_s) AS stalled_for_s,
       sum(stalled_slots) AS stalled_slots,
       max(not_answering_for_s) AS not_answering_for_s,
       bool_or(not_answering) AS not_answering
FROM per_runner
GROUP BY bucket_us
ORDER BY bucket_us;
