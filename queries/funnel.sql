-- funnel: per hop, the expected bus events that entered it, left it, were lost in it and are still pending in it.
-- Counted are expected bus events (verdict_facts rows where `expected`: source_id = expected_id) whose verdict the
-- vocabulary puts in the funnel (not excluded, unverified or not emitted: those never raise a loss rate); a verdict is
-- a hop's loss when the vocabulary's loss_hop names it. zendesk->bus: those -> those any AWS store holds. bus->sink:
-- those -> those the sink holds (the vocabulary's reached_sink: delivered or duplicated). `held`: of the pending, those
-- held only because a store the hop's losses rest on was read in part, or the bus log read ends before them (verdicts
-- `would_be` a loss of that hop: the losses the day cannot yet call). `recovered`: of the out, those the pipeline
-- lost and `reconcile recover` made land (verdict recovered), so a recovery never hides what the hop lost. Hop names
-- and order: queries/hops.csv.
CREATE OR REPLACE TABLE funnel AS
WITH counted AS (
    -- verdict_facts summed first and the vocabulary joined to the sums (verdict_counts.sql says why)
    SELECT verdict, linked, would_be, sum(n)::BIGINT AS n
    FROM verdict_facts
    WHERE expected
    GROUP BY verdict, linked, would_be
), j AS (
    SELECT n.verdict, n.linked, n.n, c.loss_hop, c.reached_sink, w.loss_hop AS held_hop
    FROM counted n JOIN verdict_vocab c USING (verdict) LEFT JOIN verdict_vocab w ON w.verdict = n.would_be
    WHERE c.in_funnel
)
SELECT (SELECT ord FROM hop_vocab WHERE hop = 'zendesk_to_bus') AS ord, 'zendesk_to_bus' AS name,
       coalesce(sum(n), 0)::BIGINT AS "in",
       coalesce(sum(n) FILTER (WHERE linked), 0)::BIGINT AS "out",
       coalesce(sum(n) FILTER (WHERE loss_hop = 'zendesk_to_bus'), 0)::BIGINT AS lost,
       coalesce(sum(n) FILTER (WHERE verdict = 'pending' AND NOT linked), 0)::BIGINT AS pending,
       coalesce(sum(n) FILTER (WHERE held_hop = 'zendesk_to_bus'), 0)::BIGINT AS held,
       coalesce(sum(n) FILTER (WHERE verdict = 'recovered' AND NOT linked), 0)::BIGINT AS recovered
FROM j
UNION ALL
SELECT (SELECT ord FROM hop_vocab WHERE hop = 'bus_to_sink'), 'bus_to_sink',
       coalesce(sum(n) FILTER (WHERE linked), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE reached_sink), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE loss_hop = 'bus_to_sink'), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE verdict = 'pending' AND linked), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE held_hop = 'bus_to_sink'), 0)::BIGINT,
       coalesce(sum(n) FILTER (WHERE verdict = 'recovered' AND linked), 0)::BIGINT
FROM j
ORDER BY ord;
