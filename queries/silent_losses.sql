-- silent_losses: losses no store reported (lost before the bus, lost after the bus with no DLQ message), per hour
-- of Zendesk event time and event kind: when and what went missing without a trace (`silent` in
-- queries/verdicts.csv; one column per silent verdict).
CREATE OR REPLACE TABLE silent_losses AS
SELECT time_bucket(INTERVAL 1 HOUR, event_time, $window_start) AS hour,
       kind,
       count(*) AS lost,
       count(*) FILTER (WHERE verdict = 'lost_before_bus') AS lost_before_bus,
       count(*) FILTER (WHERE verdict = 'lost_after_bus') AS lost_after_bus
FROM verdicts
WHERE verdict IN (SELECT verdict FROM verdict_vocab WHERE silent) AND source_id = expected_id
GROUP BY ALL
ORDER BY hour, lost DESC, kind;
