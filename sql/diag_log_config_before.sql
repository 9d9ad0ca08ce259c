-- The newest server.log lines that say which flash-attention setting is in force (server config,
-- load request, runner start) before $until: at most one row per kind.
SELECT ts, kind, detail FROM log_events
WHERE ts < $until AND kind IN ('server_config', 'load_request', 'runner_start')
QUALIFY row_number() OVER (PARTITION BY kind ORDER BY ts DESC) = 1
ORDER BY ts;
