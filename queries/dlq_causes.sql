-- dlq_causes: the DLQ messages read for the window's events (their event time in it: a queue read whole also holds
-- earlier days' dead letters, up to its retention), by error code, exhausted retry condition and target (Kinesis or
-- log group), with how many distinct events they name.
CREATE OR REPLACE TABLE dlq_causes AS
SELECT coalesce(error_code, '(none)') AS error_code,
       coalesce(retry_condition, '(none)') AS retry_condition,
       coalesce(target_arn, '(none)') AS target_arn,
       contains(coalesce(target_arn, ''), $kinesis_target) AS kinesis_target,
       count(*) AS messages,
       count(DISTINCT eb_id) AS events
FROM dlq
WHERE event_time >= $window_start AND event_time < $window_end
GROUP BY ALL
ORDER BY messages DESC, error_code, retry_condition, target_arn;
