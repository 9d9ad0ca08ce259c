-- What server.log says about the setup before $until, for the flash-attention answer
-- (oasis_ops.probes.flash): every line that states flash attention (detail.flash_source: server
-- config, load request, runner cmd, llama.cpp context, ...), every runner spawn, and the
-- `Listening on ... (version X)` line; the newest 500, oldest first.
SELECT * FROM (
    SELECT ts, kind, msg, detail FROM log_events
    WHERE ts < $until
      AND (json_extract_string(detail, '$.flash_source') IS NOT NULL
           OR kind = 'runner_start'
           OR msg LIKE 'Listening on %(version %')
    ORDER BY ts DESC LIMIT 500
) ORDER BY ts;
