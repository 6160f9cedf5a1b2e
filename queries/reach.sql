-- reach: how far the bus log and the sink are proven to hold what they observe, one row on the whole ledgers, cross-
-- joined by verdicts.sql and settlements.sql (one cross join: the run-wide settlements read Arrow files DuckDB plans as
-- one row, and a second cross product had it hold a day's rows in memory).
--
-- bus_log_reach: where the bus log is proven to hold what the bus received (the event time, Zendesk's as the event
-- carries it), when a loss before the bus newer than that may yet be on the bus, with why (`bus_log_why`). Read by
-- rules.sql beyond_bus_log: a loss before the bus found for an event newer than it less hop A's grace is held, as no
-- read shows it never reached the bus. Two ways a log falls short:
-- 1. The sink or the DLQ holds an event more than the grace newer than the log's newest record: the bus was
--    receiving, so its log copy was read short (an export made before its data was exportable; a Firehose delivery
--    still buffering). The reach is the log's newest record.
-- 2. Otherwise, a log read from objects ($bus_log_covered: the newest object's time less [bus_log] export_lag,
--    sources.buslog.covered) holds for certain only what was exportable when its newest object was written: past
--    its newest record, up to that point, a quiet log is a quiet bus (an outage: its losses stand); beyond it, the
--    log may lack what the bus received (the sink stopped too, say), so the reach is the later of the two.
-- NULL otherwise (a live read, format api: the group as it is): a log that ends with everything else is no reason to
-- doubt it.
--
-- sink_reach: up to when the sink is proven to hold what the Kinesis stream received (Kinesis's arrival time,
-- approximateArrivalTimestamp), read by rules.sql beyond_sink. Spark reads the stream in order, so the newest arrival
-- among the rows that landed (a committed file's, or any file's when rows outside the commit log count: $outside_log,
-- but for a failed batch's leftover: rules.sql unexpired_leftover) is as far as it has read: a loss after the bus
-- whose retries may have put it on the stream later (the job stopped, or behind) may still be there, unread. NULL
-- when no row that landed has an arrival time (an empty sink; a job that writes none): nothing is proven read. The
-- rows do not name their shard, so the newest arrival of any shard stands for all (a shard lagging the others by
-- minutes is not seen).
CREATE OR REPLACE TABLE reach AS
WITH logged AS (
    SELECT max(event_time) AS reach FROM bus
), elsewhere AS (
    SELECT max(event_time) AS newest FROM (SELECT event_time FROM sink UNION ALL SELECT event_time FROM dlq)
), ends AS (
    SELECT logged.reach AS logged, elsewhere.newest, elsewhere.newest > logged.reach + $hop_a_grace AS short,
           greatest(logged.reach, $bus_log_covered::TIMESTAMPTZ) AS covered  -- greatest skips a NULL
    FROM logged, elsewhere
), bus_log AS (
    SELECT CASE WHEN short THEN logged WHEN $bus_log_covered IS NOT NULL THEN covered END AS bus_log_reach,
           CASE WHEN short
                THEN 'the bus log read ends at ' || strftime(logged, '%Y-%m-%dT%H:%M:%SZ') || ' while the sink or '
                     || 'the DLQ holds events until ' || strftime(newest, '%Y-%m-%dT%H:%M:%SZ')
                WHEN $bus_log_covered IS NOT NULL AND covered IS NOT NULL
                THEN 'the bus log holds for certain only what the bus received until '
                     || strftime(covered, '%Y-%m-%dT%H:%M:%SZ') || ' (what was not yet exportable when its newest '
                     || 'object was written is not in it: [bus_log] export_lag)'
           END AS bus_log_why
    FROM ends
), spark AS (
    SELECT max(observed_at) FILTER (WHERE (committed IS DISTINCT FROM false OR $outside_log <> 'leftover')
                                      AND NOT unexpired_leftover(committed, source_ref, $outside_log,
                                                                 $unexpired_files)) AS sink_reach
    FROM sink
)
SELECT * FROM bus_log, spark;
