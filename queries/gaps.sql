-- gaps: every event not delivered exactly once (the verdicts queries/verdicts.csv marks in_gaps: all but delivered
-- and excluded; less the kinds the emission model says never reach the bus), plus orphans and events the bus log
-- missed, one row per Zendesk child event (expected_id: the child standing for the expected bus event
-- it belongs to), in time order: the list behind gaps.csv and the report's gap table.
CREATE OR REPLACE TABLE gaps AS
SELECT event_time, verdict, cause, source_id, eb_id, ticket_id, kind, match_kind, log_copies, sink_rows,
       error_code, retry_condition, unlogged_at_bus, age_s / 3600.0 AS age_h, expected_id
FROM verdicts
WHERE (verdict IN (SELECT verdict FROM verdict_vocab WHERE in_gaps) AND NOT (verdict = 'not_emitted' AND emission = 'none'))
   OR unlogged_at_bus
UNION ALL
SELECT event_time, 'orphan', 'no source event', NULL, eb_id, ticket_id, event_type, NULL, log_copies, sink_rows,
       NULL, NULL, log_copies = 0, NULL, NULL
FROM orphans
ORDER BY event_time, verdict, source_id, eb_id;
