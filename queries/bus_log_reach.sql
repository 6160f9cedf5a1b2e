-- bus_log_reach: where the bus log is proven to hold what the bus received (the event time, Zendesk's as the event
-- carries it), when a loss before the bus newer than that may yet be on the bus, with why (`why`). One row, read by
-- rules.sql beyond_bus_log (verdicts.sql, settlements.sql): a loss before the bus found for an event newer than
-- `reach` less hop A's grace is held, as no read shows it never reached the bus. Two ways a log falls short:
-- 1. The sink or the DLQ holds an event more than the grace newer than the log's newest record: the bus was
--    receiving, so its log copy was read short (an export made before its data was exportable; a Firehose delivery
--    still buffering). `reach` is the log's newest record.
-- 2. Otherwise, a log read from objects ($bus_log_covered: the newest object's time less [bus_log] export_lag,
--    sources.buslog.covered) holds for certain only what was exportable when its newest object was written: past
--    its newest record, up to that point, a quiet log is a quiet bus (an outage: its losses stand); beyond it, the
--    log may lack what the bus received (the sink stopped too, say), so `reach` is the later of the two.
-- NULL otherwise (a live read, format api: the group as it is): a log that ends with everything else is no reason to
-- doubt it.
CREATE OR REPLACE TABLE bus_log_reach AS
WITH logged AS (
    SELECT max(event_time) AS reach FROM bus
), elsewhere AS (
    SELECT max(event_time) AS newest FROM (SELECT event_time FROM sink UNION ALL SELECT event_time FROM dlq)
), ends AS (
    SELECT logged.reach AS logged, elsewhere.newest, elsewhere.newest > logged.reach + $hop_a_grace AS short,
           greatest(logged.reach, $bus_log_covered::TIMESTAMPTZ) AS covered  -- greatest skips a NULL
    FROM logged, elsewhere
)
SELECT CASE WHEN short THEN logged WHEN $bus_log_covered IS NOT NULL THEN covered END AS reach,
       CASE WHEN short
            THEN 'the bus log read ends at ' || strftime(logged, '%Y-%m-%dT%H:%M:%SZ') || ' while the sink or the '
                 || 'DLQ holds events until ' || strftime(newest, '%Y-%m-%dT%H:%M:%SZ')
            WHEN $bus_log_covered IS NOT NULL AND covered IS NOT NULL
            THEN 'the bus log holds for certain only what the bus received until '
                 || strftime(covered, '%Y-%m-%dT%H:%M:%SZ') || ' (what was not yet exportable when its newest '
                 || 'object was written is not in it: [bus_log] export_lag)'
       END AS why
FROM ends;
