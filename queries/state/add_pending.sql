-- add_pending: events a run of window $window_key leaves pending (`adding`: a run's pending export, or the pending
-- events of its previous run it kept, keep_pending.sql), every column `pending` keeps (schema.sql).
INSERT INTO pending
SELECT $window_key, source_id, zendesk_key, eb_id, ticket_id, kind, event_time, position, other_eb_ids, emission,
       sequence_id, sequence_position, claimed_ids, audit_id, dlq_kinesis, error_code, bus_at, near_audits,
       owner_sequence
FROM adding;
