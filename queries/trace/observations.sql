-- trace observations: every record any store holds of the named events (and of the orphans a ticket id names),
-- across hops, in time order. Ledgers keep
-- EventBridge ids as UUIDs (older runs' as text) and verdicts.parquet as text: they are compared as text.
-- payload_parsed is false for a sink row whose payload was not parsed because the bus log holds the same bytes under
-- its id (sources/explained.py): its Zendesk fields are empty in the ledger, and are shown from that bus log copy
-- (same id, same payload_digest: the same bytes, so exactly what parsing the row would give). A parsed row always
-- has a family (events.parse rejects any other), so a sink row without one is such a row.
WITH named_events AS (
    SELECT source_id, eb_id, other_eb_ids FROM verdicts
    WHERE source_id = $id OR eb_id = $id OR list_contains(other_eb_ids, $id) OR zendesk_key = $id
       OR CAST(ticket_id AS VARCHAR) = $id
    UNION ALL
    -- the orphans a ticket id names (trace/orphans.sql): their records too
    SELECT NULL, eb_id, NULL FROM orphans_shown
    WHERE CAST(ticket_id AS VARCHAR) = $id
), named AS (
    SELECT source_id, eb_id FROM named_events
    UNION ALL
    SELECT source_id, unnest(other_eb_ids) FROM named_events WHERE other_eb_ids IS NOT NULL
), obs AS (
    SELECT *, hop = 'sink' AND family IS NULL AS not_parsed
    FROM (SELECT * FROM zendesk UNION ALL SELECT * FROM bus UNION ALL SELECT * FROM dlq
          UNION ALL SELECT * FROM sink) o
    WHERE (o.hop = 'zendesk' AND o.source_id IN (SELECT source_id FROM named))
       OR o.eb_id::VARCHAR IN (SELECT eb_id FROM named WHERE eb_id IS NOT NULL)
       OR o.eb_id::VARCHAR = $id
), bus_copies AS (
    -- one set of fields per id and payload (a sink row's bus log copies share its id, so they are among obs):
    -- copies with equal bytes parsed to equal fields
    SELECT eb_id, payload_digest,
           any_value({'event_time': event_time, 'ticket_id': ticket_id, 'event_type': event_type}) AS copy_fields
    FROM obs WHERE hop = 'bus'
    GROUP BY eb_id, payload_digest
), shown AS (
    SELECT o.*, c.copy_fields
    FROM obs o
    LEFT JOIN bus_copies c ON o.not_parsed AND c.eb_id = o.eb_id AND c.payload_digest = o.payload_digest
)
SELECT hop, observed_at, CASE WHEN not_parsed THEN copy_fields.event_time ELSE event_time END AS event_time,
       source_id, eb_id, CASE WHEN not_parsed THEN copy_fields.ticket_id ELSE ticket_id END AS ticket_id,
       CASE WHEN not_parsed THEN copy_fields.event_type ELSE event_type END AS event_type, source_ref,
       error_code, target_arn, retry_condition, sequence_number, committed, replay_name,
       CASE WHEN hop = 'sink' THEN NOT not_parsed END AS payload_parsed
FROM shown
ORDER BY observed_at, hop, source_ref;
