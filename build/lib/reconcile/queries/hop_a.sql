-- hop_a: links each source event to the EventBridge id(s) that carried it. Exact on the Zendesk event id where the
-- bus payload carries one (webhook family; a redelivered webhook links several ids); otherwise the composite key:
-- ticket, kind (kind_map), time within $tolerance_s seconds and, for legacy events, sequence position. A composite
-- candidate that is not one-to-one is counted as 'ambiguous' and paired with its mutually nearest candidate in time
-- (at whole seconds), the rest in time order within its (ticket, kind) group; pairing is one-to-one, so an
-- ambiguous group can never hide a loss.
CREATE OR REPLACE TABLE hop_a AS
WITH exact AS (
    SELECT s.source_id, b.eb_id, 'exact' AS match_kind
    FROM source_events s
    JOIN bus_events b ON b.zendesk_key = s.zendesk_key AND b.family = 'webhook'
), rest_s AS (
    SELECT * FROM source_events WHERE source_id NOT IN (SELECT source_id FROM exact)
), rest_b AS (
    SELECT b.*, k.api_kind
    FROM bus_events b
    JOIN kind_map k ON k.bus_type = b.event_type
    WHERE b.eb_id NOT IN (SELECT eb_id FROM exact)
      AND b.event_time >= $window_start - to_seconds($tolerance_s)
      AND b.event_time < $window_end + to_seconds($tolerance_s)
), cand AS (
    SELECT s.source_id, b.eb_id, s.ticket_id, s.kind, s.event_time AS s_time,
           b.event_time AS b_time, b.sequence_position AS b_pos
    FROM rest_s s
    JOIN rest_b b
      ON b.ticket_id = s.ticket_id AND b.api_kind = s.kind
     AND abs(epoch(b.event_time) - epoch(s.event_time)) <= $tolerance_s
     AND (b.sequence_position IS NULL OR s.position IS NULL OR b.sequence_position = s.position)
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
    SELECT *, row_number() OVER (PARTITION BY ticket_id, kind ORDER BY b_time, b_pos, eb_id) AS r FROM amb_b
), ambiguous_pairs AS (
    SELECT source_id, eb_id, 'ambiguous' AS match_kind FROM mutual
    UNION ALL
    SELECT s.source_id, b.eb_id, 'ambiguous'
    FROM ranked_s s
    JOIN ranked_b b USING (ticket_id, kind, r)
    JOIN amb a ON a.source_id = s.source_id AND a.eb_id = b.eb_id
)
SELECT * FROM exact
UNION ALL SELECT * FROM unique_pairs
UNION ALL SELECT * FROM ambiguous_pairs;
