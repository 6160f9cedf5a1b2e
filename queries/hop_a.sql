-- hop_a: links each expected bus event (source_events.expected_id: one per child, or one per audit for kinds the
-- emission model folds) to the EventBridge id(s) that carried it. Exact on the Zendesk event id where the bus payload
-- carries one (webhook family; a redelivered webhook links several ids; the id of any child of a folded event links
-- it); otherwise the composite key: ticket, model kind (emission_model), time within $tolerance_s seconds and the
-- sequence position within the expected event's possible positions (pos_low..pos_high: unknown kinds of the same
-- update may or may not take a position). A composite candidate that is not one-to-one is counted as 'ambiguous' and
-- paired one-to-one by pair_candidates. The candidate tests and the pairing are macros in queries/rules.sql, shared
-- with settlements.sql. One connector event sent under two EventBridge ids (same sequence id and position) is matched
-- once and both ids are linked to it, as for a redelivered webhook. queries/sequences.sql then adds the links found by sequence position.
CREATE OR REPLACE TABLE hop_a AS
WITH exact AS (
    SELECT DISTINCT s.expected_id AS source_id, b.eb_id, 'exact' AS match_kind
    FROM source_events s
    JOIN bus_events b ON exact_candidate(b.family, b.zendesk_key, s.zendesk_key)
), resent AS (
    -- the same connector event under several EventBridge ids: rare, so found with one narrow count
    SELECT sequence_id, sequence_position, min(eb_id) AS first_eb
    FROM bus_events
    WHERE family = 'legacy' AND sequence_id IS NOT NULL AND sequence_position IS NOT NULL
    GROUP BY sequence_id, sequence_position HAVING count(*) > 1
), copies AS (
    SELECT b.eb_id, r.first_eb
    FROM bus_events b
    JOIN resent r USING (sequence_id, sequence_position)
    WHERE b.family = 'legacy' AND b.eb_id <> r.first_eb
), rest_s AS (
    SELECT * FROM source_events
    WHERE source_id = expected_id AND emission IN ('child', 'audit')
      AND source_id NOT IN (SELECT source_id FROM exact)
), rest_b AS (
    SELECT b.*, k.api_kind
    FROM bus_events b
    JOIN emission_model k ON k.bus_type = b.event_type
    WHERE b.eb_id NOT IN (SELECT eb_id FROM exact)
      AND b.eb_id NOT IN (SELECT eb_id FROM copies)
      AND b.event_time >= $window_start - to_seconds(2 * $tolerance_s)
      AND b.event_time < $window_end + to_seconds(2 * $tolerance_s)
), cand AS (
    SELECT s.source_id, b.eb_id, s.ticket_id, s.model_kind AS kind, s.event_time AS s_time,
           b.event_time AS b_time, b.sequence_position AS b_pos
    FROM rest_s s
    JOIN rest_b b ON composite_candidate(s.ticket_id, s.model_kind, s.event_time, s.pos_low, s.position,
                                         b.ticket_id, b.api_kind, b.event_time, b.sequence_position, $tolerance_s)
), found AS (
    SELECT * FROM exact
    UNION ALL SELECT * FROM pair_candidates('cand')
)
SELECT * FROM found
UNION ALL
SELECT f.source_id, c.eb_id, f.match_kind FROM found f JOIN copies c ON c.first_eb = f.eb_id;
