-- candidates: one row per EventBridge id the run judged lost after the bus or dead-lettered (from `verdicts`, the
-- run's verdicts.parquet, and `settled`, its settlements.parquet: pending events of earlier windows it settled so,
-- `settled_from` their window), with where its original event may still be read: a copy in the bus log (`bus`:
-- object and line) and the message the rule's Kinesis target left in the DLQ (`dlq`), as far as this run read them
-- (an earlier window's event may have its copy only in that window's bus log). Zendesk children folded into one bus
-- event share its id: the event is recovered once for all of them. Ids are compared as text: the ledgers keep them
-- as UUIDs (older runs' as text), verdicts.parquet and settlements.parquet as text. The first copy is the earliest
-- logged, one with no time after those with one: a Firehose delivery with message extraction keeps no log time, and
-- arg_min skips a row whose order is NULL (every such copy was "no bus log copy").
WITH lost AS (
    SELECT eb_id, min(verdict) AS verdict, min(source_id) AS source_id, count(*) AS children,
           min(event_time) AS event_time, min(bus_at) AS bus_at, min(ticket_id) AS ticket_id, min(kind) AS kind,
           min(settled_from) AS settled_from
    FROM (SELECT eb_id, verdict, source_id, event_time, bus_at, ticket_id, kind, NULL::VARCHAR AS settled_from
          FROM verdicts
          UNION ALL
          -- an id this run also judges as its own (two overlapping windows) is planned as the run's own event
          SELECT eb_id, verdict, source_id, event_time, NULL::TIMESTAMPTZ, ticket_id, kind, window_key FROM settled
          WHERE eb_id NOT IN (SELECT eb_id FROM verdicts WHERE eb_id IS NOT NULL))
    WHERE verdict IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'bus_to_sink') AND eb_id IS NOT NULL
    GROUP BY eb_id
), logged AS (
    SELECT eb_id::VARCHAR AS eb_id, first(source_ref ORDER BY observed_at NULLS LAST, source_ref) AS bus_ref,
           min(observed_at) AS logged_at
    FROM bus
    WHERE eb_id::VARCHAR IN (SELECT eb_id FROM lost)
    GROUP BY ALL
), lettered AS (
    SELECT eb_id::VARCHAR AS eb_id, first(source_ref ORDER BY observed_at NULLS LAST, source_ref) AS dlq_ref
    FROM dlq
    WHERE eb_id::VARCHAR IN (SELECT eb_id FROM lost) AND contains(coalesce(target_arn, ''), $kinesis_target)
    GROUP BY ALL
)
SELECT l.eb_id, l.verdict, l.source_id, l.children, l.event_time, l.ticket_id, l.kind, l.settled_from,
       coalesce(g.logged_at, l.bus_at) AS logged_at, g.bus_ref, d.dlq_ref
FROM lost l
LEFT JOIN logged g USING (eb_id)
LEFT JOIN lettered d USING (eb_id)
ORDER BY l.event_time, l.eb_id;
