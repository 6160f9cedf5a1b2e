-- unlogged_causes: events that reached the sink or the DLQ but have no bus-log record (an observability gap, not a
-- loss), by verdict and reason: the log-group target dead-lettered them, or nothing says why. Expected bus events
-- are counted (folded children once), as in every figure.
CREATE OR REPLACE TABLE unlogged_causes AS
SELECT verdict,
       CASE WHEN dlq_other > 0 THEN 'log target dead-lettered' ELSE 'no log record, no DLQ message' END AS reason,
       count(*) AS events
FROM verdicts
WHERE unlogged_at_bus AND source_id = expected_id
GROUP BY ALL
ORDER BY events DESC, verdict, reason;
