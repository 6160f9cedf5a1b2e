-- bus_log_reach: where the bus log read ends (the event time, Zendesk's as the event carries it, of its newest record),
-- when the sink or the DLQ holds an event more than hop A's grace newer: the bus was receiving, so its log copy was
-- read short (a CloudWatch export made before its data was exportable, up to 12 h; a Firehose delivery still
-- buffering). NULL otherwise: a log that ends with everything else (the bus itself went quiet) is no reason to doubt
-- it. One row, read by rules.sql beyond_bus_log (verdicts.sql, settlements.sql): a loss before the bus found for an
-- event newer than the end less the grace is held, as no read shows it never reached the bus.
CREATE OR REPLACE TABLE bus_log_reach AS
WITH logged AS (
    SELECT max(event_time) AS reach FROM bus
), elsewhere AS (
    SELECT max(event_time) AS newest FROM (SELECT event_time FROM sink UNION ALL SELECT event_time FROM dlq)
)
SELECT CASE WHEN elsewhere.newest > logged.reach + $hop_a_grace THEN logged.reach END AS reach,
       elsewhere.newest
FROM logged, elsewhere;
