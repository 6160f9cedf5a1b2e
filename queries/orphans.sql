-- orphans: EventBridge ids seen downstream (bus log, DLQ or sink) that no source event links to and whose Zendesk
-- event time is inside the window: records with no known origin. "In window" is decided by the Zendesk event time
-- at the API's resolution (whole seconds: the payload's time truncated), and a bus event linked to a Zendesk event
-- just outside the window (source_events keeps those) is neither an orphan nor a gap.
CREATE OR REPLACE TABLE orphans AS
SELECT b.eb_id, b.zendesk_key, b.ticket_id, b.event_type, b.family, b.event_time, b.log_copies, b.sink_rows,
       b.dlq_kinesis + b.dlq_other AS dlq_messages
FROM bus_events b
WHERE date_trunc('second', b.event_time) >= $window_start AND date_trunc('second', b.event_time) < $window_end
  AND b.eb_id NOT IN (SELECT eb_id FROM hop_a);
