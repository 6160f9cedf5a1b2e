-- verdicts: one row per Zendesk child event in the window (docs/design.md), judged by the expected bus event it
-- belongs to (expected_id: children the emission model folds share one) from what its linked EventBridge id(s) left
-- in each store, with the cause, the hop latencies and whether the bus log missed it. A child the model does not
-- know is 'unverified' unless its update's connector sequence pairs it with a position (seq_units); a kind the model
-- says never reaches the bus, or an expected event left out of a complete sequence, is 'not_emitted'. Neither is a
-- loss. An event linked to one id (nearly all) takes that id's row as it is; only events linked to several ids are
-- summed over them (counts stay BIGINT).
-- Recovery (issue 16; table `recoveries`, from the state's recovery journal): an event whose first sink arrival is
-- at or after the send of a recovery of any of its ids is 'recovered' (recovery_lag_s: arrival - send); one that
-- landed before any recovery keeps the verdict it has on its own; one sent but not landed is 'pending' until the
-- horizon counted from the send, then lost again (the cause says the recovery did not land).
CREATE OR REPLACE TABLE verdicts AS
WITH multi AS (
    SELECT source_id FROM hop_a GROUP BY source_id HAVING count(*) > 1
), linked AS (
    SELECT l.source_id, 1 AS eb_ids, l.eb_id, NULL::VARCHAR[] AS other_eb_ids, l.match_kind, b.event_type AS bus_type, b.log_copies, b.sink_rows,
           b.sink_sequences,
           b.uncommitted_rows, b.replayed, b.dlq_kinesis, b.dlq_other, b.error_code, b.retry_condition,
           b.dlq_target, b.bus_at, b.sink_at, b.dlq_at
    FROM hop_a l
    JOIN bus_events b USING (eb_id)
    WHERE l.source_id NOT IN (SELECT source_id FROM multi)
    UNION ALL
    SELECT l.source_id,
           count(*) AS eb_ids,
           min(l.eb_id) AS eb_id,
           list(l.eb_id ORDER BY l.eb_id)[2:] AS other_eb_ids,  -- the ids besides eb_id: `trace` follows them all
           any_value(l.match_kind) AS match_kind,
           min(b.event_type) AS bus_type,
           sum(b.log_copies)::BIGINT AS log_copies,
           sum(b.sink_rows)::BIGINT AS sink_rows,
           sum(b.sink_sequences)::BIGINT AS sink_sequences,
           sum(b.uncommitted_rows)::BIGINT AS uncommitted_rows,
           bool_or(b.replayed) AS replayed,
           sum(b.dlq_kinesis)::BIGINT AS dlq_kinesis,
           sum(b.dlq_other)::BIGINT AS dlq_other,
           min(b.error_code) AS error_code,
           min(b.retry_condition) AS retry_condition,
           min(b.dlq_target) AS dlq_target,
           min(b.bus_at) AS bus_at,
           min(b.sink_at) AS sink_at,
           min(b.dlq_at) AS dlq_at
    FROM hop_a l
    JOIN bus_events b USING (eb_id)
    WHERE l.source_id IN (SELECT source_id FROM multi)
    GROUP BY l.source_id
), rec AS (  -- recovery: the first send of a recovery of any id linked to the event
    SELECT l.source_id, min(r.sent_at) AS sent_at, arg_min(r.route, r.sent_at) AS route,
           arg_min(r.replay_name, r.sent_at) AS replay_name
    FROM hop_a l JOIN recoveries r USING (eb_id)
    GROUP BY l.source_id
), judged AS (
    SELECT s.source_id, s.zendesk_key, s.ticket_id, s.kind, s.event_time, s.audit_id, s.position, s.source_ref,
           s.expected_id, s.model_kind, s.emission, q.sequence_id, q.total AS sequence_total,
           q.position AS sequence_position, q.complete AS sequence_complete,
           coalesce(l.match_kind, 'unmatched') AS match_kind,
           l.eb_id, l.other_eb_ids, l.bus_type, coalesce(l.eb_ids, 0) AS eb_ids,
           coalesce(l.log_copies, 0) AS log_copies,
           coalesce(l.sink_rows, 0) AS sink_rows,
           coalesce(l.sink_sequences, 0) AS sink_sequences,
           coalesce(l.uncommitted_rows, 0) AS uncommitted_rows,
           coalesce(l.dlq_kinesis, 0) AS dlq_kinesis,
           coalesce(l.dlq_other, 0) AS dlq_other,
           l.error_code, l.retry_condition, l.dlq_target, l.bus_at, l.sink_at, l.dlq_at,
           r.route AS recovery_route, r.sent_at AS recovery_sent_at,
           CASE r.route WHEN 'replay' THEN 'replay ' || r.replay_name ELSE 're-put' END AS recovery_how,
           epoch($as_of) - epoch(s.event_time) AS age_s,
           CASE
               WHEN s.excluded THEN 'excluded'
               WHEN l.source_id IS NULL AND s.emission = 'none' THEN 'not_emitted'
               WHEN l.source_id IS NULL AND q.position IS NULL AND s.emission = 'unknown' THEN 'unverified'
               WHEN l.source_id IS NULL AND q.position IS NULL AND q.complete THEN 'not_emitted'
               WHEN l.source_id IS NULL THEN
                   CASE WHEN $as_of - s.event_time < $hop_a_grace THEN 'pending' ELSE 'lost_before_bus' END
               -- recovery: landed at/after the send (an unknown arrival time counts: the send found it absent)
               WHEN l.sink_rows > 0 AND r.sent_at IS NOT NULL AND (l.sink_at IS NULL OR l.sink_at >= r.sent_at)
                   THEN 'recovered'
               WHEN l.sink_rows > 1 THEN 'duplicated'
               WHEN l.sink_rows = 1 THEN 'delivered'
               WHEN l.sink_rows = 0 AND $as_of - r.sent_at < $horizon THEN 'pending'  -- recovery sent, not landed
               WHEN l.dlq_kinesis > 0 THEN 'dead_lettered'
               WHEN $as_of - s.event_time < $horizon THEN 'pending'
               ELSE 'lost_after_bus'
           END AS verdict,
           CASE
               WHEN l.eb_ids > 1 THEN 'redelivery'
               WHEN l.replayed THEN 'replay'
               WHEN l.sink_sequences > 1 THEN 'redelivery'
               ELSE 're-batched'
           END AS duplicate_cause
    FROM source_events s
    LEFT JOIN linked l ON l.source_id = s.expected_id
    LEFT JOIN seq_units q ON q.source_id = s.expected_id
    LEFT JOIN rec r ON r.source_id = s.expected_id
    WHERE s.in_window
)
SELECT * EXCLUDE (duplicate_cause, recovery_how),
       CASE WHEN recovery_sent_at IS NOT NULL AND verdict IN ('recovered', 'pending')  -- recovery (issue 16)
            THEN recovery_how || CASE verdict WHEN 'recovered' THEN ' landed' ELSE ' sent, not landed yet' END ELSE
       CASE verdict
           WHEN 'duplicated' THEN duplicate_cause
           WHEN 'dead_lettered' THEN coalesce(error_code, 'unknown error')
           WHEN 'lost_after_bus' THEN 'no sink row, no DLQ message'
           WHEN 'lost_before_bus' THEN CASE WHEN sequence_position IS NOT NULL
               THEN 'sequence ' || sequence_id || ' had ' || sequence_total || ' events, position '
                    || sequence_position || ' never reached any store'
               ELSE 'not in any AWS store' END
           WHEN 'unverified' THEN 'kind ' || model_kind || ' is not in the emission model: add a line to '
                                  || '[match] emission_model (reconcile calibrate suggests one)'
           WHEN 'not_emitted' THEN CASE WHEN emission = 'none' THEN 'the emission model says ' || model_kind
                                             || ' never reaches the bus'
               ELSE 'sequence ' || sequence_id || ' (' || sequence_total || ' events) is complete without it' END
           WHEN 'pending' THEN CASE WHEN eb_id IS NULL THEN 'not yet on the bus' ELSE 'within retry horizon' END
       END || CASE WHEN recovery_sent_at IS NOT NULL AND verdict IN ('dead_lettered', 'lost_after_bus')
                   THEN ', and the ' || recovery_how || ' sent did not land within the horizon' ELSE '' END
       END AS cause,
       verdict IN ('delivered', 'duplicated', 'dead_lettered', 'recovered') AND log_copies = 0 AS unlogged_at_bus,
       epoch(bus_at) - epoch(event_time) AS bus_latency_s,
       -- a recovered event's arrival is its recovery's, not the pipeline's: no latency (recovery_lag_s instead)
       CASE WHEN verdict <> 'recovered' THEN epoch(sink_at) - epoch(bus_at) END AS sink_latency_s,
       CASE WHEN verdict <> 'recovered' THEN epoch(sink_at) - epoch(event_time) END AS end_to_end_s,
       CASE WHEN verdict = 'recovered' THEN epoch(sink_at) - epoch(recovery_sent_at) END AS recovery_lag_s
FROM judged;
