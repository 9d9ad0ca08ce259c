-- Audited actions per action and outcome, and the newest of each (the exporter's
-- oasis_actions_total and oasis_action_last_timestamp_seconds; Grafana's annotations).
SELECT action, coalesce(outcome, 'unknown') AS outcome, count(*) AS n, max(epoch(ts)) AS last_ts
FROM actions
GROUP BY ALL
ORDER BY action, outcome;
