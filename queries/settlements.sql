-- settlements: pending events carried in from earlier windows (table `carried`), judged again against this run's
-- stores: delivered late (with lateness), duplicated, dead-lettered, lost, or still pending. Events still missing
-- the bus are re-matched by Zendesk event id, else by ticket, model kind (emission_model), time and sequence position
-- (at most the carried position: kinds the model does not know may or may not have taken one before it).
-- Recovery (issue 16): as in verdicts.sql, an event that landed at/after the send of a recovery (`recoveries`) is
-- 'recovered' (recovery_lag_s), and one sent but not landed stays pending until the horizon counted from the send.
CREATE OR REPLACE TABLE settlements AS
WITH exact AS (
    SELECT c.window_key, c.source_id, b.eb_id
    FROM carried c
    JOIN bus_events b ON b.zendesk_key = c.zendesk_key AND b.family = 'webhook'
    WHERE c.eb_id IS NULL
), composite AS (
    SELECT c.window_key, c.source_id,
           arg_min(b.eb_id, abs(epoch(b.event_time) - epoch(c.event_time))) AS eb_id
    FROM carried c
    JOIN emission_model k ON k.api_kind = model_kind(c.kind)
    JOIN bus_events b
      ON b.event_type = k.bus_type AND b.ticket_id = c.ticket_id
     AND abs(epoch(b.event_time) - epoch(c.event_time)) <= $tolerance_s
     AND (b.sequence_position IS NULL OR c.position IS NULL OR b.sequence_position <= c.position)
    WHERE c.eb_id IS NULL
      AND (c.window_key, c.source_id) NOT IN (SELECT (window_key, source_id) FROM exact)
    GROUP BY c.window_key, c.source_id
), links AS (
    SELECT window_key, source_id, eb_id FROM carried WHERE eb_id IS NOT NULL
    UNION ALL SELECT * FROM exact
    UNION ALL SELECT * FROM composite
), found AS (
    SELECT l.window_key, l.source_id, min(l.eb_id) AS eb_id,
           coalesce(sum(b.sink_rows), 0) AS sink_rows,
           coalesce(sum(b.dlq_kinesis), 0) AS dlq_kinesis,
           min(b.sink_at) AS sink_at, min(r.sent_at) AS sent_at
    FROM links l
    LEFT JOIN bus_events b USING (eb_id)
    LEFT JOIN recoveries r USING (eb_id)  -- recovery
    GROUP BY l.window_key, l.source_id
)
SELECT c.window_key, c.source_id, c.kind, c.ticket_id, c.event_time, f.eb_id,
       CASE
           WHEN f.sink_rows > 0 AND f.sent_at IS NOT NULL AND (f.sink_at IS NULL OR f.sink_at >= f.sent_at)
                THEN 'recovered'
           WHEN f.sink_rows > 1 THEN 'duplicated'
           WHEN f.sink_rows = 1 THEN 'delivered'
           WHEN f.sink_rows = 0 AND $as_of - f.sent_at < $horizon THEN 'pending'  -- recovery sent, not landed
           WHEN f.dlq_kinesis > 0 THEN 'dead_lettered'
           WHEN f.eb_id IS NULL THEN
               CASE WHEN $as_of - c.event_time < $hop_a_grace THEN 'pending' ELSE 'lost_before_bus' END
           WHEN $as_of - c.event_time < $horizon THEN 'pending'
           ELSE 'lost_after_bus'
       END AS verdict,
       epoch(f.sink_at) - epoch(c.event_time) AS lateness_s,
       CASE WHEN f.sink_rows > 0 AND f.sink_at >= f.sent_at THEN epoch(f.sink_at) - epoch(f.sent_at) END
           AS recovery_lag_s
FROM carried c
LEFT JOIN found f USING (window_key, source_id);
