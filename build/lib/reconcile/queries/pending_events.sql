-- pending_events: the 100 oldest events still pending (not judged yet: EventBridge may still deliver them or Zendesk
-- may still hand them to the bus), with their age at as-of and what they wait for. The count of all pending events
-- is in verdict_counts; the report shows these as the ones closest to becoming losses.
CREATE OR REPLACE TABLE pending_events AS
SELECT event_time, source_id, eb_id, ticket_id, kind, cause, age_s, log_copies > 0 AS at_bus
FROM verdicts
WHERE verdict = 'pending'
ORDER BY age_s DESC, event_time, source_id
LIMIT 100;
