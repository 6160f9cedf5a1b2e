-- trace observations: every record any store holds of the named events, across hops, in time order. Ledgers keep
-- EventBridge ids as UUIDs (older runs' as text) and verdicts.parquet as text: they are compared as text.
-- payload_parsed is false for a sink row whose payload was not parsed because the bus log holds the same bytes under
-- its id (sources/explained.py): its Zendesk fields are empty in the ledger, and are its bus log copy's. A parsed
-- row always has a family (events.parse rejects any other), so a sink row without one is such a row.
WITH named_events AS (
    SELECT source_id, eb_id, other_eb_ids FROM verdicts
    WHERE source_id = $id OR eb_id = $id OR list_contains(other_eb_ids, $id) OR zendesk_key = $id
       OR CAST(ticket_id AS VARCHAR) = $id
), named AS (
    SELECT source_id, eb_id FROM named_events
    UNION ALL
    SELECT source_id, unnest(other_eb_ids) FROM named_events WHERE other_eb_ids IS NOT NULL
), obs AS (
    SELECT * FROM zendesk UNION ALL SELECT * FROM bus UNION ALL SELECT * FROM dlq UNION ALL SELECT * FROM sink
)
SELECT o.hop, o.observed_at, o.event_time, o.source_id, o.eb_id, o.ticket_id, o.event_type, o.source_ref,
       o.error_code, o.target_arn, o.retry_condition, o.sequence_number, o.committed, o.replay_name,
       CASE WHEN o.hop = 'sink' THEN o.family IS NOT NULL END AS payload_parsed
FROM obs o
WHERE (o.hop = 'zendesk' AND o.source_id IN (SELECT source_id FROM named))
   OR o.eb_id::VARCHAR IN (SELECT eb_id FROM named WHERE eb_id IS NOT NULL)
   OR o.eb_id::VARCHAR = $id
ORDER BY o.observed_at, o.hop, o.source_ref;
