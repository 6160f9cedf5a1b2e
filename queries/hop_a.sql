-- hop_a: links each expected bus event (source_events.expected_id: one per child, or one per audit for kinds the
-- emission model folds) to the EventBridge id(s) that carried it. Exact on the Zendesk event id where the bus payload
-- carries one (webhook family; a redelivered webhook links several ids; the id of any child of a folded event links
-- it); otherwise the composite key: ticket, model kind (emission_model), time within $tolerance_s seconds and the
-- sequence position within the expected event's possible positions (pos_low..pos_high: unknown kinds of the same
-- update may or may not take a position). A composite candidate that is not one-to-one is counted as 'ambiguous' and
-- paired with its mutually nearest candidate in time (at whole seconds), the rest in time order within its (ticket,
-- kind) group; pairing is one-to-one, so an ambiguous group can never hide a loss. One connector event sent under
-- two EventBridge ids (same sequence id and position) is matched once and both ids are linked to it, as for a
-- redelivered webhook. queries/sequences.sql then adds the links found by sequence position.
CREATE OR REPLACE TABLE hop_a AS
WITH exact AS (
    SELECT DISTINCT s.expected_id AS source_id, b.eb_id, 'exact' AS match_kind
    FROM source_events s
    JOIN bus_events b ON b.zendesk_key = s.zendesk_key AND b.family = 'webhook'
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
    JOIN rest_b b
      ON b.ticket_id = s.ticket_id AND b.api_kind = s.model_kind
     AND abs(epoch(b.event_time) - epoch(s.event_time)) <= $tolerance_s
     AND (b.sequence_position IS NULL OR s.pos_low IS NULL
          OR b.sequence_position BETWEEN s.pos_low AND s.position)
), multi_s AS (
    -- candidates that are not one-to-one are few: find them with two narrow counts instead of windows over all
    SELECT source_id FROM cand GROUP BY source_id HAVING count(*) > 1
), multi_b AS (
    SELECT eb_id FROM cand GROUP BY eb_id HAVING count(*) > 1
), unique_pairs AS (
    SELECT source_id, eb_id, 'composite' AS match_kind FROM cand
    WHERE source_id NOT IN (SELECT source_id FROM multi_s) AND eb_id NOT IN (SELECT eb_id FROM multi_b)
), amb AS (
    -- Distance at the API's resolution: audit times are whole seconds, bus times carry the fraction after it.
    SELECT *, abs(epoch(date_trunc('second', b_time)) - epoch(s_time)) AS d
    FROM cand
    WHERE source_id IN (SELECT source_id FROM multi_s) OR eb_id IN (SELECT eb_id FROM multi_b)
), nearest AS (
    SELECT *,
           row_number() OVER (PARTITION BY source_id ORDER BY d, b_pos, eb_id) AS rank_for_s,
           row_number() OVER (PARTITION BY eb_id ORDER BY d, try_cast(source_id AS BIGINT), source_id) AS rank_for_b,
           count(*) OVER (PARTITION BY source_id, d) AS ties_s,
           count(*) OVER (PARTITION BY eb_id, d) AS ties_b
    FROM amb
), mutual AS (
    -- each is the other's one nearest candidate: paired on time, whatever else in the group was lost
    SELECT source_id, eb_id FROM nearest WHERE rank_for_s = 1 AND rank_for_b = 1 AND ties_s = 1 AND ties_b = 1
), amb_s AS (
    SELECT DISTINCT source_id, ticket_id, kind, s_time FROM amb
    WHERE source_id NOT IN (SELECT source_id FROM mutual)
), amb_b AS (
    SELECT DISTINCT eb_id, ticket_id, kind, b_time, b_pos FROM amb
    WHERE eb_id NOT IN (SELECT eb_id FROM mutual)
), ranked_s AS (
    SELECT *, row_number() OVER (PARTITION BY ticket_id, kind
                                 ORDER BY s_time, try_cast(source_id AS BIGINT), source_id) AS r
    FROM amb_s
), ranked_b AS (
    SELECT *, row_number() OVER (PARTITION BY ticket_id, kind
                                 ORDER BY date_trunc('second', b_time), b_pos, b_time, eb_id) AS r
    FROM amb_b
), ambiguous_pairs AS (
    SELECT source_id, eb_id, 'ambiguous' AS match_kind FROM mutual
    UNION ALL
    SELECT s.source_id, b.eb_id, 'ambiguous'
    FROM ranked_s s
    JOIN ranked_b b USING (ticket_id, kind, r)
    JOIN amb a ON a.source_id = s.source_id AND a.eb_id = b.eb_id
), found AS (
    SELECT * FROM exact
    UNION ALL SELECT * FROM unique_pairs
    UNION ALL SELECT * FROM ambiguous_pairs
)
SELECT * FROM found
UNION ALL
SELECT f.source_id, c.eb_id, f.match_kind FROM found f JOIN copies c ON c.first_eb = f.eb_id;
