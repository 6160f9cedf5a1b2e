-- bus_events: one row per EventBridge id seen in any AWS store (bus log, DLQ, sink), with the Zendesk fields its
-- payload carries (connector sequence included) and what each store holds of it: log copies, sink rows and
-- sequences, DLQ messages by target. Sink copies in files outside Spark's commit log count as rules.sql sink_copies
-- says.
-- Each store is summed up on its own, then the three are joined on eb_id. The payload fields come from the bus log
-- copy where there is one, else the sink row, else the DLQ message. At ten million ids, carrying long strings
-- through an aggregation costs more than everything else here, so ids a store holds once (nearly all) skip it:
-- only the repeated ones are aggregated, and distinct sequence numbers are counted only for ids with several rows.
CREATE OR REPLACE TABLE bus_events AS
WITH repeated_in_log AS (
    SELECT eb_id FROM bus WHERE eb_id IS NOT NULL GROUP BY eb_id HAVING count(*) > 1
), log AS (
    SELECT eb_id, zendesk_key, ticket_id, event_type, family, event_time, sequence_id, sequence_position,
           sequence_total, 1 AS log_copies, observed_at AS bus_at
    FROM bus WHERE eb_id IS NOT NULL AND eb_id NOT IN (SELECT eb_id FROM repeated_in_log)
    UNION ALL
    SELECT eb_id,
           any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_id) AS sequence_id, any_value(sequence_position) AS sequence_position,
           any_value(sequence_total) AS sequence_total,
           count(*) AS log_copies, min(observed_at) AS bus_at
    FROM bus WHERE eb_id IN (SELECT eb_id FROM repeated_in_log)
    GROUP BY eb_id
), sink_rows AS NOT MATERIALIZED (
    -- a failed batch's leftover though [sink] retention is set (rules.sql unexpired_leftover): its rows are no copy,
    -- only counted as outside the log (`left_only`); counted as expired entries, they were delivered
    SELECT *, unexpired_leftover(committed, source_ref, $outside_log, $unexpired_files) AS leftover
    FROM sink WHERE eb_id IS NOT NULL
), sunk AS NOT MATERIALIZED (
    SELECT * EXCLUDE (leftover) FROM sink_rows WHERE NOT leftover
), left_only AS (
    SELECT eb_id, count(*) AS leftover_rows FROM sink_rows WHERE leftover GROUP BY eb_id
), landed AS (
    SELECT eb_id, count(*) AS copies, count(sequence_number) AS sequences_if_one,
           outside_log_rows(committed) AS outside_log,
           bool_or(replay_name IS NOT NULL) AS replayed, landed_at(observed_at, committed, $outside_log) AS sink_at
    FROM sunk
    GROUP BY eb_id
), resequenced AS (
    SELECT eb_id, count(DISTINCT sequence_number) AS sink_sequences,
           outside_only_sequences(sequence_number, committed) AS outside_only
    FROM sunk WHERE eb_id IN (SELECT eb_id FROM landed WHERE copies > 1)
    GROUP BY eb_id
), dead AS (
    SELECT eb_id,
           any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_id) AS sequence_id, any_value(sequence_position) AS sequence_position,
           any_value(sequence_total) AS sequence_total,
           count(*) FILTER (WHERE kinesis) AS dlq_kinesis,
           count(*) FILTER (WHERE NOT kinesis) AS dlq_other,
           arg_min(error_code, observed_at) FILTER (WHERE kinesis) AS error_code,
           arg_min(retry_condition, observed_at) FILTER (WHERE kinesis) AS retry_condition,
           arg_min(target_arn, observed_at) AS dlq_target,
           min(observed_at) FILTER (WHERE kinesis) AS dlq_at
    FROM (SELECT *, contains(coalesce(target_arn, ''), $kinesis_target) AS kinesis FROM dlq WHERE eb_id IS NOT NULL)
    GROUP BY eb_id
), unlogged AS (
    SELECT eb_id,
           any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_id) AS sequence_id, any_value(sequence_position) AS sequence_position,
           any_value(sequence_total) AS sequence_total
    FROM sink WHERE eb_id IS NOT NULL AND eb_id NOT IN (SELECT eb_id FROM log)
    GROUP BY eb_id
)
SELECT eb_id,
       coalesce(l.zendesk_key, u.zendesk_key, d.zendesk_key) AS zendesk_key,
       coalesce(l.ticket_id, u.ticket_id, d.ticket_id) AS ticket_id,
       coalesce(l.event_type, u.event_type, d.event_type) AS event_type,
       coalesce(l.family, u.family, d.family) AS family,
       coalesce(l.event_time, u.event_time, d.event_time) AS event_time,
       coalesce(l.sequence_id, u.sequence_id, d.sequence_id) AS sequence_id,
       coalesce(l.sequence_position, u.sequence_position, d.sequence_position) AS sequence_position,
       coalesce(l.sequence_total, u.sequence_total, d.sequence_total) AS sequence_total,
       coalesce(l.log_copies, 0) AS log_copies, l.bus_at,
       coalesce(sink_copies(s.copies, s.outside_log, r.outside_only, $outside_log), 0) AS sink_rows,
       coalesce(r.sink_sequences, s.sequences_if_one, 0) AS sink_sequences,
       coalesce(sink_copies_outside(s.copies, s.outside_log, r.outside_only, $outside_log), o.leftover_rows, 0)
           AS uncommitted_rows,
       coalesce(s.replayed, false) AS replayed, s.sink_at,
       coalesce(d.dlq_kinesis, 0) AS dlq_kinesis, coalesce(d.dlq_other, 0) AS dlq_other,
       d.error_code, d.retry_condition, d.dlq_target, d.dlq_at
FROM log l
FULL JOIN landed s USING (eb_id)
FULL JOIN left_only o USING (eb_id)
FULL JOIN dead d USING (eb_id)
LEFT JOIN unlogged u USING (eb_id)
LEFT JOIN resequenced r USING (eb_id);
