-- trace events: the judged events an id names: a Zendesk child event id, an EventBridge id (any of an event's) or a
-- ticket id.
SELECT source_id, eb_id, ticket_id, kind, event_time, verdict, cause, match_kind, log_copies, sink_rows,
       dlq_kinesis, error_code, unlogged_at_bus, source_ref
FROM verdicts
WHERE source_id = $id OR eb_id = $id OR list_contains(other_eb_ids, $id) OR zendesk_key = $id OR CAST(ticket_id AS VARCHAR) = $id
ORDER BY event_time, source_id;
