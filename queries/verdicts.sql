-- verdicts: one row per Zendesk child event in the window (docs/design.md), judged by the expected bus event it
-- belongs to (expected_id: children the emission model folds share one) from what its linked EventBridge id(s) left
-- in each store, with the cause, the hop latencies and whether the bus log missed it (unlogged_at_bus: the sink or
-- the DLQ holds it, `past_bus` in queries/verdicts.csv, but the bus log does not). A child the model does not
-- know is 'unverified' unless its update's connector sequence links it to a bus event (seq_units); a kind the model
-- says never reaches the bus, or an expected event left out of a complete sequence, is 'not_emitted'. Neither is a
-- loss. The facts per event come from bus_facts, the verdict from verdict_of and the cause from cause_of
-- (queries/rules.sql: the rules settlements.sql judges carried events by), recoveries included: `recovered` with
-- recovery_lag_s (sink arrival - the send); a recovered event's latencies are its recovery's, so none are given. A loss
-- found while a store it rests on was read only in part ($unsettled_<hop>: completeness.unsettled), or one before the
-- bus of an event newer than where the bus log read ends (beyond_bus_log, reach.sql), is held 'pending'
-- (loss_held_by), with the loss it would be (`would_be`): the state carries it, and a later run judges it again.
CREATE OR REPLACE TABLE verdicts AS
WITH linked AS (
    SELECT * FROM bus_facts('hop_a', 'bus_events')
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
           l.recovery_route, l.recovery_sent_at,
           epoch($as_of) - epoch(s.event_time) AS age_s,
           verdict_of(l.source_id IS NOT NULL, l.sink_rows, l.dlq_kinesis, $as_of - s.event_time, $hop_a_grace,
                      $horizon, excluded := s.excluded, emission := s.emission, sequence_position := q.position,
                      sequence_complete := q.complete, since_recovery := $as_of - l.recovery_sent_at,
                      landed_after_recovery := landed_after(l.recovery_sent_at, l.sink_at),
                      retry_age := $as_of - retry_start(s.event_time, l.bus_at)) AS verdict,
           l.replayed, l.families, recovery_how(l.recovery_route, l.recovery_replay) AS recovery_how
    FROM source_events s
    LEFT JOIN linked l ON l.source_id = s.expected_id
    LEFT JOIN seq_units q ON q.source_id = s.expected_id
    WHERE s.in_window
), held AS (
    SELECT * REPLACE (held_verdict(verdict, held_by) AS verdict), verdict AS found
    FROM (SELECT j.*, loss_held_by(j.verdict, coalesce($unsettled_zendesk_to_bus,
                                                        beyond_bus_log(j.event_time, r.bus_log_reach, r.bus_log_why,
                                                                       $hop_a_grace)),
                                   coalesce($unsettled_bus_to_sink,
                                            beyond_dlq(j.verdict, retry_start(j.event_time, j.bus_at), $dlq_reach,
                                                       $horizon, $dlq_in_part),
                                            beyond_sink(j.verdict, retry_start(j.event_time, j.bus_at), r.sink_reach,
                                                        $horizon, $stream_retention, $as_of))) AS held_by
          FROM judged j CROSS JOIN reach r)
)
SELECT * EXCLUDE (replayed, families, recovery_how, found, held_by),
       CASE WHEN held_by IS NOT NULL THEN found END AS would_be,
       CASE WHEN held_by IS NOT NULL THEN held_cause(found, held_by)
            ELSE cause_of(verdict, eb_id, eb_ids, replayed, sink_sequences, error_code, model_kind,
                          emission := emission, sequence_id := sequence_id, sequence_total := sequence_total,
                          sequence_position := sequence_position, recovery_how := recovery_how,
                          outside_log := only_outside_log(sink_rows, uncommitted_rows, $outside_log),
                          landed_after_recovery := landed_after(recovery_sent_at, sink_at),
                          families := families) END AS cause,
       found IN (SELECT verdict FROM verdict_vocab WHERE past_bus) AND log_copies = 0 AS unlogged_at_bus,
       epoch(bus_at) - epoch(event_time) AS bus_latency_s,
       CASE WHEN verdict <> 'recovered' THEN epoch(sink_at) - epoch(bus_at) END AS sink_latency_s,
       CASE WHEN verdict <> 'recovered' THEN epoch(sink_at) - epoch(event_time) END AS end_to_end_s,
       recovery_lag(verdict, sink_at, recovery_sent_at) AS recovery_lag_s
FROM held;
