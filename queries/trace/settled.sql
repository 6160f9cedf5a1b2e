-- trace settled: the pending events of earlier windows this run judged again (settlements.parquet) that an id names:
-- a Zendesk event id, an EventBridge id or a ticket id, with what the run made of them.
SELECT window_key, source_id, ticket_id, kind, event_time, eb_id, verdict, cause, lateness_s
FROM settled
WHERE source_id = $id OR eb_id = $id OR CAST(ticket_id AS VARCHAR) = $id
ORDER BY window_key, event_time, source_id;
