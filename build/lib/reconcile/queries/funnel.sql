-- funnel: per hop, the events that entered it, left it, were lost in it and are still pending in it.
-- zendesk->bus: non-excluded source events -> those any AWS store holds. bus->sink: those -> delivered.
CREATE OR REPLACE TABLE funnel AS
WITH j AS (SELECT * FROM verdicts WHERE verdict <> 'excluded')
SELECT 1 AS ord, 'zendesk_to_bus' AS name,
       count(*) AS "in",
       count(*) FILTER (WHERE eb_id IS NOT NULL) AS "out",
       count(*) FILTER (WHERE verdict = 'lost_before_bus') AS lost,
       count(*) FILTER (WHERE verdict = 'pending' AND eb_id IS NULL) AS pending
FROM j
UNION ALL
SELECT 2, 'bus_to_sink',
       count(*) FILTER (WHERE eb_id IS NOT NULL),
       count(*) FILTER (WHERE verdict IN ('delivered', 'duplicated')),
       count(*) FILTER (WHERE verdict IN ('dead_lettered', 'lost_after_bus')),
       count(*) FILTER (WHERE verdict = 'pending' AND eb_id IS NOT NULL)
FROM j
ORDER BY ord;
