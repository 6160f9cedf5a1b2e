-- funnel: per hop, the expected bus events that entered it, left it, were lost in it and are still pending in it.
-- Counted are expected bus events (verdicts rows where source_id = expected_id) whose verdict the vocabulary puts in
-- the funnel (not excluded, unverified or not emitted: those never raise a loss rate); a verdict is a hop's loss
-- when the vocabulary's loss_hop names it. zendesk->bus: those -> those any AWS store holds. bus->sink: those ->
-- those the sink holds (the vocabulary's reached_sink: delivered or duplicated). Hop names and order: queries/hops.csv.
CREATE OR REPLACE TABLE funnel AS
WITH counted AS (
    -- the verdict rows counted first and the vocabulary joined to the counts (verdict_counts.sql says why)
    SELECT verdict, eb_id IS NOT NULL AS linked, count(*) AS n
    FROM verdicts
    WHERE source_id = expected_id
    GROUP BY verdict, linked
), j AS (
    SELECT n.verdict, n.linked, n.n, c.loss_hop, c.reached_sink
    FROM counted n JOIN verdict_vocab c USING (verdict)
    WHERE c.in_funnel
)
SELECT (SELECT ord FROM hop_vocab WHERE hop = 'zendesk_to_bus') AS ord, 'zendesk_to_bus' AS name,
       coalesce(sum(n), 0)::BIGINT AS "in",
       coalesce(sum(n) FILTER (WHERE linked), 0)::BIGINT AS "out",
       coalesce(sum(n) FILTER (WHERE loss_hop = 'zendesk_to_bus'), 0)::BIGINT AS lost,
       coalesce(sum(n) FILTER (WHERE verdict = 'pending' AND NOT linked), 0)::BIGINT AS pending
FROM j
UNION ALL
SELECT (SELECT ord FROM hop_vocab WHERE hop = 'bus_to_sink'), 'bus_to_sink',
       coalesce(sum(n) FILTER (WHERE linked), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE reached_sink), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE loss_hop = 'bus_to_sink'), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE verdict = 'pending' AND linked), 0)::BIGINT
FROM j
ORDER BY ord;
