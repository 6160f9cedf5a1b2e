-- hop_a: links each expected bus event (source_events.expected_id: one per child, or one per audit for kinds the
-- emission model folds) to the EventBridge id(s) that carried it. Exact on the Zendesk event id where the bus payload
-- carries one (webhook family; a redelivered webhook links several ids; the id of any child of a folded event links
-- it); otherwise the composite key: ticket, model kind (emission_model) and time within $tolerance_s seconds, the
-- sequence position deciding between candidates (pos_low..pos_high: unknown kinds of the same update may or may not
-- take a position; a position out of the assumed order is matched last, as 'out_of_order'). A composite candidate
-- that is not one-to-one is counted as 'ambiguous' and paired one-to-one (pair_composite), an id whose connector
-- sequence another update's event is linked to (`anchors`) fitting no event of another update. The candidate tests and
-- the pairing are macros in queries/rules.sql, shared with settlements.sql. One connector event sent under two
-- EventBridge ids (same sequence id and position), or one webhook delivered twice (same webhook event id, which is
-- not the API's child id: such events match on the composite key), is matched once and both ids are linked to it.
-- With [match] both_families, the second statement pairs each family's copies left over (below).
-- queries/sequences.sql then adds the links found by sequence position.
CREATE OR REPLACE TABLE hop_a AS
WITH exact AS (
    SELECT DISTINCT s.expected_id AS source_id, b.eb_id, 'exact' AS match_kind
    FROM source_events s
    JOIN bus_events b ON exact_candidate(b.family, b.zendesk_key, s.zendesk_key)
), copies AS (
    SELECT * FROM bus_copies('bus_events')
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
      AND b.event_time >= $window_start - bus_reach($tolerance_s)
      AND b.event_time < $window_end + bus_reach($tolerance_s)
), cand_all AS MATERIALIZED (
    SELECT s.source_id, b.eb_id, s.ticket_id, s.model_kind AS kind, s.event_time AS s_time,
           b.event_time AS b_time, b.sequence_position AS b_pos, s.audit_id, b.sequence_id,
           position_fits(s.pos_low, s.position, b.sequence_position) AS fits
    FROM rest_s s
    JOIN rest_b b ON composite_candidate(s.ticket_id, s.model_kind, s.event_time,
                                         b.ticket_id, b.api_kind, b.event_time, $tolerance_s)
), multi_s AS (
    SELECT source_id FROM cand_all GROUP BY source_id HAVING count(*) > 1
), multi_b AS (
    SELECT eb_id FROM cand_all GROUP BY eb_id HAVING count(*) > 1
), contested AS (
    -- the sequences of candidates that are not one-to-one: the only ones an anchor can decide (few)
    SELECT DISTINCT sequence_id FROM cand_all
    WHERE sequence_id IS NOT NULL
      AND (source_id IN (SELECT source_id FROM multi_s) OR eb_id IN (SELECT eb_id FROM multi_b))
), anchors AS (
    -- a connector sequence is one ticket update's: the sequence of an id linked exactly, or of one that is the only
    -- candidate of an event that is its only candidate, is that event's audit's (one naming two audits is none's)
    SELECT sequence_id, min(audit_id) AS audit_id
    FROM (SELECT b.sequence_id, s.audit_id
          FROM (SELECT eb_id, sequence_id FROM bus_events
                WHERE sequence_id IN (SELECT sequence_id FROM contested)) b
          JOIN exact e USING (eb_id) JOIN source_events s USING (source_id)
          UNION ALL
          SELECT sequence_id, audit_id FROM cand_all
          WHERE sequence_id IN (SELECT sequence_id FROM contested)
            AND source_id NOT IN (SELECT source_id FROM multi_s) AND eb_id NOT IN (SELECT eb_id FROM multi_b))
    WHERE audit_id IS NOT NULL
    GROUP BY sequence_id
    HAVING min(audit_id) = max(audit_id)
), cand AS (
    -- an id whose sequence is another update's does not fit an event (pair_composite pairs it last, if at all): on
    -- time alone, a skewed id of one update went to the next update's event, hiding that one's loss
    SELECT c.source_id, c.eb_id, c.ticket_id, c.kind, c.s_time, c.b_time, c.b_pos,
           c.fits AND coalesce(a.audit_id = c.audit_id, true) AS fits
    FROM cand_all c
    LEFT JOIN anchors a USING (sequence_id)
), found AS (
    SELECT * FROM exact
    UNION ALL SELECT * FROM pair_composite('cand')
)
SELECT * FROM found
UNION ALL
SELECT * FROM copy_links('found', 'copies');

-- [match] both_families ($both_families): the connector and the webhook route both put the same events on the bus (a
-- migration), so one Zendesk event is there once in each family. Paired together above, one copy is left unpaired
-- (an orphan) and the event judged by whichever copy was paired: lost after the bus while its other copy landed. A
-- bus event left unpaired is then paired, as composite candidates are (pair_composite), with the events linked only
-- in the other family (a webhook's exact link included), so the event is judged by both copies (rules.sql bus_facts
-- `families`). Off, such a copy stays an orphan: on a day when each event took one route it may be an unrelated one,
-- and taking it for a copy could hide a loss. Off, every table below is empty at its scan.
INSERT INTO hop_a
WITH left_all AS MATERIALIZED (
    -- the bus events no event is linked to (few, unless both families carried the events)
    SELECT b.*, k.api_kind
    FROM bus_events b
    JOIN emission_model k ON k.bus_type = b.event_type
    WHERE $both_families AND b.eb_id NOT IN (SELECT eb_id FROM hop_a WHERE $both_families)
      AND b.event_time >= $window_start - bus_reach($tolerance_s)
      AND b.event_time < $window_end + bus_reach($tolerance_s)
), left_copies AS (
    SELECT * FROM bus_copies('left_all')
), cand_all AS MATERIALIZED (
    SELECT s.source_id, b.eb_id, s.ticket_id, s.model_kind AS kind, s.event_time AS s_time,
           b.event_time AS b_time, b.sequence_position AS b_pos, coalesce(b.family, '') AS family,
           position_fits(s.pos_low, s.position, b.sequence_position) AS fits
    FROM source_events s
    JOIN (SELECT * FROM left_all WHERE eb_id NOT IN (SELECT eb_id FROM left_copies)) b
      ON composite_candidate(s.ticket_id, s.model_kind, s.event_time, b.ticket_id, b.api_kind, b.event_time,
                             $tolerance_s)
    WHERE s.source_id = s.expected_id AND s.emission IN ('child', 'audit')
), linked_in AS (
    -- the one family those candidates' events are linked in
    SELECT h.source_id, min(coalesce(b.family, '')) AS family
    FROM (SELECT * FROM hop_a WHERE source_id IN (SELECT source_id FROM cand_all)) h
    JOIN bus_events b USING (eb_id)
    GROUP BY h.source_id
    HAVING count(DISTINCT coalesce(b.family, '')) = 1
), cand AS (
    SELECT c.* EXCLUDE (family) FROM cand_all c JOIN linked_in l USING (source_id) WHERE c.family <> l.family
), found AS MATERIALIZED (
    SELECT * FROM pair_composite('cand')
)
SELECT * FROM found
UNION ALL
SELECT * FROM copy_links('found', 'left_copies');
