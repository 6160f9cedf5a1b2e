-- funnel: per hop, the expected bus events that entered it, left it, were lost in it and are still pending in it.
-- Counted are expected bus events (verdicts rows where source_id = expected_id) whose verdict the vocabulary puts in
-- the funnel (not excluded, unverified or not emitted: those never raise a loss rate); a verdict is a hop's loss
-- when the vocabulary's loss_hop names it. zendesk->bus: those -> those any AWS store holds. bus->sink: those ->
-- delivered or duplicated.
CREATE OR REPLACE TABLE funnel AS
WITH j AS (
    SELECT v.verdict, v.eb_id, c.loss_hop
    FROM verdicts v JOIN verdict_vocab c USING (verdict)
    WHERE c.in_funnel AND v.source_id = v.expected_id
)
SELECT 1 AS ord, 'zendesk_to_bus' AS name,
       count(*) AS "in",
       count(*) FILTER (WHERE eb_id IS NOT NULL) AS "out",
       count(*) FILTER (WHERE loss_hop = 'zendesk_to_bus') AS lost,
       count(*) FILTER (WHERE verdict = 'pending' AND eb_id IS NULL) AS pending
FROM j
UNION ALL
SELECT 2, 'bus_to_sink',
       count(*) FILTER (WHERE eb_id IS NOT NULL),
       count(*) FILTER (WHERE verdict IN ('delivered', 'duplicated', 'recovered')),  -- recovered: landed too
       count(*) FILTER (WHERE loss_hop = 'bus_to_sink'),
       count(*) FILTER (WHERE verdict = 'pending' AND eb_id IS NOT NULL)
FROM j
ORDER BY ord;
