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
-- With [match] both_families ($both_families: the connector and the webhook route both put the same events on the bus,
-- a migration), each payload family is paired on its own (the pairing's `family`), an event linked exactly by its
-- webhook copy included in the connector family's: one Zendesk event there once in each is linked in each and judged
-- by both copies (rules.sql bus_facts `families`). Pooled, as they are without it, one copy was left an orphan and the
-- event judged by whichever was paired (lost after the bus while its other copy landed); but on a day when each event
-- took one route, pairing each family on its own gives one event another's copy of the other family.
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
), exact_s AS (
    -- with $both_families, the events linked exactly, for their connector copies (none without it)
    SELECT * FROM source_events
    WHERE $both_families AND source_id = expected_id AND emission IN ('child', 'audit')
      AND source_id IN (SELECT source_id FROM exact WHERE $both_families)
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
           pairing_family(b.family, $both_families) AS family,
           position_fits(s.pos_low, s.position, b.sequence_position) AS fits
    FROM rest_s s
    JOIN rest_b b ON composite_candidate(s.ticket_id, s.model_kind, s.event_time,
                                         b.ticket_id, b.api_kind, b.event_time, $tolerance_s)
    UNION ALL
    SELECT s.source_id, b.eb_id, s.ticket_id, s.model_kind, s.event_time, b.event_time, b.sequence_position,
           s.audit_id, b.sequence_id, b.family, position_fits(s.pos_low, s.position, b.sequence_position)
    FROM exact_s s
    JOIN (SELECT * FROM rest_b WHERE family = 'legacy') b
      ON composite_candidate(s.ticket_id, s.model_kind, s.event_time, b.ticket_id, b.api_kind, b.event_time,
                             $tolerance_s)
), multi_s AS (
    SELECT source_id, family FROM cand_all GROUP BY source_id, family HAVING count(*) > 1
), multi_b AS (
    SELECT eb_id FROM cand_all GROUP BY eb_id HAVING count(*) > 1
), contested AS (
    -- the sequences of candidates that are not one-to-one: the only ones an anchor can decide (few)
    SELECT DISTINCT sequence_id FROM cand_all c
    WHERE sequence_id IS NOT NULL
      AND (EXISTS (SELECT 1 FROM multi_s m WHERE m.source_id = c.source_id AND m.family = c.family)
           OR eb_id IN (SELECT eb_id FROM multi_b))
), anchors AS (
    -- a connector sequence is one ticket update's: the sequence of an id linked exactly, or of one that is the only
    -- candidate of an event that is its only candidate, is that event's audit's (one naming two audits is none's)
    SELECT sequence_id, min(audit_id) AS audit_id
    FROM (SELECT b.sequence_id, s.audit_id
          FROM (SELECT eb_id, sequence_id FROM bus_events
                WHERE sequence_id IN (SELECT sequence_id FROM contested)) b
          JOIN exact e USING (eb_id) JOIN source_events s USING (source_id)
          UNION ALL
          SELECT sequence_id, audit_id FROM cand_all c
          WHERE sequence_id IN (SELECT sequence_id FROM contested)
            AND NOT EXISTS (SELECT 1 FROM multi_s m WHERE m.source_id = c.source_id AND m.family = c.family)
            AND eb_id NOT IN (SELECT eb_id FROM multi_b))
    WHERE audit_id IS NOT NULL
    GROUP BY sequence_id
    HAVING min(audit_id) = max(audit_id)
), cand AS (
    -- an id whose sequence is another update's does not fit an event (pair_composite pairs it last, if at all): on
    -- time alone, a skewed id of one update went to the next update's event, hiding that one's loss
    SELECT c.source_id, c.eb_id, c.ticket_id, c.kind, c.family, c.s_time, c.b_time, c.b_pos,
           c.fits AND coalesce(a.audit_id = c.audit_id, true) AS fits
    FROM cand_all c
    LEFT JOIN anchors a USING (sequence_id)
), found AS (
    -- an event linked exactly takes its connector copy only when it is the one candidate each way: by time order
    -- among several, a lost event took another update's copy, and its loss was delivered
    SELECT * FROM exact
    UNION ALL
    SELECT * FROM pair_composite('cand') p
    WHERE NOT ($both_families AND p.match_kind <> 'composite' AND p.source_id IN (SELECT source_id FROM exact_s))
)
SELECT * FROM found
UNION ALL
SELECT * FROM copy_links('found', 'copies');
