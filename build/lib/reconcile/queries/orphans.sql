-- orphans: EventBridge ids seen downstream (bus log, DLQ or sink) whose Zendesk event time is inside the window
-- but that no source event links to: records with no known origin.
CREATE OR REPLACE TABLE orphans AS
SELECT b.eb_id, b.zendesk_key, b.ticket_id, b.event_type, b.family, b.event_time, b.log_copies, b.sink_rows,
       b.dlq_kinesis + b.dlq_other AS dlq_messages
FROM bus_events b
WHERE b.event_time >= $window_start AND b.event_time < $window_end
  AND b.eb_id NOT IN (SELECT eb_id FROM hop_a);
