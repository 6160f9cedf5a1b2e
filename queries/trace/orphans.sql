-- trace orphans: the bus records no Zendesk event of the run explains (gaps.csv's `orphan` rows, bound as
-- `orphans_shown`) that an id names: their EventBridge id or their ticket id. Shaped as trace/events.sql's rows.
SELECT NULL::VARCHAR AS source_id, eb_id, ticket_id, kind, event_time, verdict, cause, match_kind, log_copies,
       sink_rows, NULL::BIGINT AS dlq_kinesis, error_code, unlogged_at_bus, NULL::VARCHAR AS source_ref
FROM orphans_shown
WHERE eb_id = $id OR CAST(ticket_id AS VARCHAR) = $id
ORDER BY event_time, eb_id;
