-- bus_events: one row per EventBridge id seen in any AWS store (bus log, DLQ, sink), with the Zendesk fields its
-- payload carries and what each store holds of it: log copies, sink rows and sequences, DLQ messages by target.
CREATE OR REPLACE TABLE bus_events AS
WITH obs AS (
    SELECT hop, eb_id, zendesk_key, ticket_id, event_type, family, event_time, observed_at, sequence_position,
           replay_name, sequence_number, committed, target_arn, error_code, retry_condition
    FROM bus
    UNION ALL
    SELECT hop, eb_id, zendesk_key, ticket_id, event_type, family, event_time, observed_at, sequence_position,
           replay_name, sequence_number, committed, target_arn, error_code, retry_condition
    FROM dlq
    UNION ALL
    SELECT hop, eb_id, zendesk_key, ticket_id, event_type, family, event_time, observed_at, sequence_position,
           replay_name, sequence_number, committed, target_arn, error_code, retry_condition
    FROM sink
), marked AS (
    SELECT *, hop = 'dlq' AND contains(coalesce(target_arn, ''), $kinesis_target) AS dlq_kinesis
    FROM obs
    WHERE eb_id IS NOT NULL
)
SELECT eb_id,
       any_value(zendesk_key) AS zendesk_key,
       any_value(ticket_id) AS ticket_id,
       any_value(event_type) AS event_type,
       any_value(family) AS family,
       min(event_time) AS event_time,
       any_value(sequence_position) AS sequence_position,
       count(*) FILTER (WHERE hop = 'bus') AS log_copies,
       min(observed_at) FILTER (WHERE hop = 'bus') AS bus_at,
       count(*) FILTER (WHERE hop = 'sink') AS sink_rows,
       count(DISTINCT sequence_number) FILTER (WHERE hop = 'sink') AS sink_sequences,
       count(*) FILTER (WHERE hop = 'sink' AND committed IS NOT DISTINCT FROM false) AS uncommitted_rows,
       coalesce(bool_or(replay_name IS NOT NULL) FILTER (WHERE hop = 'sink'), false) AS replayed,
       min(observed_at) FILTER (WHERE hop = 'sink') AS sink_at,
       count(*) FILTER (WHERE dlq_kinesis) AS dlq_kinesis,
       count(*) FILTER (WHERE hop = 'dlq' AND NOT dlq_kinesis) AS dlq_other,
       arg_min(error_code, observed_at) FILTER (WHERE dlq_kinesis) AS error_code,
       arg_min(retry_condition, observed_at) FILTER (WHERE dlq_kinesis) AS retry_condition,
       arg_min(target_arn, observed_at) FILTER (WHERE hop = 'dlq') AS dlq_target,
       min(observed_at) FILTER (WHERE dlq_kinesis) AS dlq_at
FROM marked
GROUP BY eb_id;
