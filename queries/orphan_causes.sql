-- orphan_causes: orphans (downstream records no source event links to) by bus event type and family, with where
-- they were seen: explains whether they are foreign events, replays or Zendesk events the read missed. `listed_update`:
-- the connector's events of a listed update none of whose children links (a merge, a deletion, spam: their children
-- judged by that sequence, sequences.sql `lone`), accounted for though no event links to them. `beside_other_family`:
-- those of one payload family with a Zendesk event of their ticket and kind within the composite tolerance linked in
-- the other (rules.sql composite_candidate): the copies of events both the connector and the webhook route carried,
-- when both ran ([match] both_families pairs them), or unrelated events beside them.
-- (`coalesce(x IN (...), false)` is a MARK join built on the few orphans' tickets: verdicts may be the partitions'
-- files, which give DuckDB no row count.)
CREATE OR REPLACE TABLE orphan_causes AS
WITH near AS MATERIALIZED (
    SELECT v.ticket_id, v.model_kind, v.event_time, m.family
    FROM (SELECT ticket_id, model_kind, event_time, bus_type FROM verdicts
          WHERE coalesce(ticket_id IN (SELECT ticket_id FROM orphans), false) AND bus_type IS NOT NULL) v
    JOIN emission_model m ON m.bus_type = v.bus_type
), beside AS (
    SELECT DISTINCT o.eb_id
    FROM orphans o
    JOIN emission_model k ON k.bus_type = o.event_type
    JOIN near n ON composite_candidate(n.ticket_id, n.model_kind, n.event_time, o.ticket_id, k.api_kind, o.event_time,
                                       $tolerance_s)
    WHERE n.family <> o.family
)
SELECT coalesce(event_type, '(none)') AS event_type,
       coalesce(family, '(none)') AS family,
       count(*) AS events,
       count(*) FILTER (WHERE log_copies > 0) AS in_bus_log,
       count(*) FILTER (WHERE sink_rows > 0) AS in_sink,
       count(*) FILTER (WHERE dlq_messages > 0) AS in_dlq,
       count(*) FILTER (WHERE zendesk_key IS NOT NULL) AS with_zendesk_id,
       count(*) FILTER (WHERE lone_update) AS listed_update,
       count(*) FILTER (WHERE eb_id IN (SELECT eb_id FROM beside)) AS beside_other_family
FROM orphans
GROUP BY ALL
ORDER BY events DESC, event_type, family;
