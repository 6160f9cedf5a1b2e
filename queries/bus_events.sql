-- bus_events: one row per EventBridge id seen in any AWS store (bus log, DLQ, sink), with the Zendesk fields its
-- payload carries and what each store holds of it: log copies, sink rows and sequences, DLQ messages by target.
-- Each store is aggregated on its own first (sink copies per Kinesis record, then per id), then joined on the id.
CREATE OR REPLACE TABLE bus_events AS
WITH log AS (
    SELECT eb_id, any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_position) AS sequence_position, count(*) AS log_copies, min(observed_at) AS bus_at
    FROM bus
    WHERE eb_id IS NOT NULL
    GROUP BY eb_id
), records AS (
    SELECT eb_id, sequence_number, any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_position) AS sequence_position, count(*) AS rows,
           count(*) FILTER (WHERE committed IS NOT DISTINCT FROM false) AS uncommitted_rows,
           bool_or(replay_name IS NOT NULL) AS replayed, min(observed_at) AS sink_at
    FROM sink
    WHERE eb_id IS NOT NULL
    GROUP BY eb_id, sequence_number
), snk AS (
    SELECT eb_id, any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_position) AS sequence_position, sum(rows)::BIGINT AS sink_rows,
           count(sequence_number) AS sink_sequences, sum(uncommitted_rows)::BIGINT AS uncommitted_rows,
           bool_or(replayed) AS replayed, min(sink_at) AS sink_at
    FROM records
    GROUP BY eb_id
), marked AS (
    SELECT *, contains(coalesce(target_arn, ''), $kinesis_target) AS kinesis FROM dlq WHERE eb_id IS NOT NULL
), d AS (
    SELECT eb_id, any_value(zendesk_key) AS zendesk_key, any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS event_type, any_value(family) AS family, min(event_time) AS event_time,
           any_value(sequence_position) AS sequence_position,
           count(*) FILTER (WHERE kinesis) AS dlq_kinesis,
           count(*) FILTER (WHERE NOT kinesis) AS dlq_other,
           arg_min(error_code, observed_at) FILTER (WHERE kinesis) AS error_code,
           arg_min(retry_condition, observed_at) FILTER (WHERE kinesis) AS retry_condition,
           arg_min(target_arn, observed_at) AS dlq_target,
           min(observed_at) FILTER (WHERE kinesis) AS dlq_at
    FROM marked
    GROUP BY eb_id
)
SELECT eb_id,
       coalesce(log.zendesk_key, snk.zendesk_key, d.zendesk_key) AS zendesk_key,
       coalesce(log.ticket_id, snk.ticket_id, d.ticket_id) AS ticket_id,
       coalesce(log.event_type, snk.event_type, d.event_type) AS event_type,
       coalesce(log.family, snk.family, d.family) AS family,
       least(log.event_time, snk.event_time, d.event_time) AS event_time,
       coalesce(log.sequence_position, snk.sequence_position, d.sequence_position) AS sequence_position,
       coalesce(log.log_copies, 0) AS log_copies,
       log.bus_at,
       coalesce(snk.sink_rows, 0) AS sink_rows,
       coalesce(snk.sink_sequences, 0) AS sink_sequences,
       coalesce(snk.uncommitted_rows, 0) AS uncommitted_rows,
       coalesce(snk.replayed, false) AS replayed,
       snk.sink_at,
       coalesce(d.dlq_kinesis, 0) AS dlq_kinesis,
       coalesce(d.dlq_other, 0) AS dlq_other,
       d.error_code, d.retry_condition, d.dlq_target, d.dlq_at
FROM log
FULL OUTER JOIN snk USING (eb_id)
FULL OUTER JOIN d USING (eb_id);
