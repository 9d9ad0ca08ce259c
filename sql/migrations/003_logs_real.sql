-- Sidecar migration 003 (issue 10, additive): server.log lines in the shapes people really have.
-- log_timings.request_line_no: the line of the Gin request a llama-server timing block was tied
-- to (by order of completion, see oasis_ops.logs.parse); NULL when the block found no request
-- and took a neighbouring line's time instead.
-- log_events.kind gains 'runner_discovery' (a runner spawned without --model: GPU discovery,
-- not a model load) and 'flash_attention' (a line stating flash attention on/off/auto); the
-- load events (runner_start / runner_started / load_request) carry detail.load_id and
-- detail.model (the weights blob, or the MLX model name); detail.repeat marks a second
-- "started in" line of the same load.
ALTER TABLE log_timings ADD COLUMN request_line_no BIGINT;
