-- metrics_check: each EventBridge metric summed over the window next to the per-event figure it should roughly
-- match (events lost after the bus counted as expected bus events, as EventBridge counts them), and the difference.
-- Metrics are best-effort (PIPELINE.md §5): this is a sanity check, never a verdict. A metric counts when EventBridge
-- emits it: a dead letter when it is sent, after up to [window] max_event_age of retries (a day by default), so the
-- DLQ figures count the DLQ messages sent in the window (their SentTimestamp), whichever event they carry.
CREATE OR REPLACE TABLE metrics_check AS
WITH m AS (
    SELECT metric, sum(value) AS metric_value, count(*) AS datapoints
    FROM metrics
    WHERE "timestamp" >= $window_start AND "timestamp" < $window_end
    GROUP BY metric
), e AS (
    SELECT count(*) AS bus_events,
           sum(CASE WHEN log_copies > 0 THEN 1 ELSE 0 END) + sum(sink_sequences) AS target_deliveries
    FROM bus_events
    WHERE event_time >= $window_start AND event_time < $window_end
), sent AS (
    SELECT count(*) AS dlq_messages FROM dlq WHERE observed_at >= $window_start AND observed_at < $window_end
), lost AS (
    SELECT count(*) AS lost_after_bus FROM verdicts WHERE verdict = 'lost_after_bus' AND source_id = expected_id
), expected(ord, metric, per_event_basis) AS (
    VALUES (1, 'MatchedEvents', 'distinct EventBridge ids seen in any AWS store'),
           (2, 'Invocations', 'log-group copies + distinct Kinesis records'),
           (3, 'FailedInvocations', 'DLQ messages sent in the window + events lost after the bus'),
           (4, 'InvocationsSentToDlq', 'DLQ messages sent in the window'),
           (5, 'InvocationsFailedToBeSentToDlq', 'events lost after the bus'),
           (6, 'ThrottledRules', 'no per-event counterpart')
)
SELECT x.ord, x.metric, m.metric_value, coalesce(m.datapoints, 0) AS datapoints,
       CASE x.metric
           WHEN 'MatchedEvents' THEN e.bus_events
           WHEN 'Invocations' THEN e.target_deliveries
           WHEN 'FailedInvocations' THEN sent.dlq_messages + lost.lost_after_bus
           WHEN 'InvocationsSentToDlq' THEN sent.dlq_messages
           WHEN 'InvocationsFailedToBeSentToDlq' THEN lost.lost_after_bus
       END AS per_event_value,
       x.per_event_basis
FROM expected x
CROSS JOIN e
CROSS JOIN sent
CROSS JOIN lost
LEFT JOIN m ON m.metric = x.metric
ORDER BY x.ord;
