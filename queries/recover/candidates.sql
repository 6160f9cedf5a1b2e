-- candidates: one row per EventBridge id the run judged lost after the bus or dead-lettered (from `verdicts`, the
-- run's verdicts.parquet), with where its original event may still be read: a copy in the bus log (`bus`: object
-- and line) and the message the rule's Kinesis target left in the DLQ (`dlq`). Zendesk children folded into one bus
-- event share its id: the event is recovered once for all of them. Ids are compared as text: the ledgers keep them
-- as UUIDs (older runs' as text), verdicts.parquet as text.
WITH lost AS (
    SELECT eb_id, min(verdict) AS verdict, min(source_id) AS source_id, count(*) AS children,
           min(event_time) AS event_time, min(bus_at) AS bus_at, min(ticket_id) AS ticket_id, min(kind) AS kind
    FROM verdicts
    WHERE verdict IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'bus_to_sink') AND eb_id IS NOT NULL
    GROUP BY eb_id
), logged AS (
    SELECT eb_id::VARCHAR AS eb_id, arg_min(source_ref, observed_at) AS bus_ref, min(observed_at) AS logged_at
    FROM bus
    WHERE eb_id::VARCHAR IN (SELECT eb_id FROM lost)
    GROUP BY ALL
), lettered AS (
    SELECT eb_id::VARCHAR AS eb_id, arg_min(source_ref, observed_at) AS dlq_ref
    FROM dlq
    WHERE eb_id::VARCHAR IN (SELECT eb_id FROM lost) AND contains(coalesce(target_arn, ''), $kinesis_target)
    GROUP BY ALL
)
SELECT l.eb_id, l.verdict, l.source_id, l.children, l.event_time, l.ticket_id, l.kind,
       coalesce(g.logged_at, l.bus_at) AS logged_at, g.bus_ref, d.dlq_ref
FROM lost l
LEFT JOIN logged g USING (eb_id)
LEFT JOIN lettered d USING (eb_id)
ORDER BY l.event_time, l.eb_id;
