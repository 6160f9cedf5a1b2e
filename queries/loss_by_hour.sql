-- loss_by_hour: per hour (or $bucket_s-second bucket) of Zendesk event time, expected bus events and their verdicts
-- (one column per verdict of the vocabulary, table verdict_vocab, in its order, zero when absent), plus how many
-- reached the bus log and the sink: the timeline that shows a spike and what it cost.
-- The buckets are verdict_facts' (bucketed there from $window_start); summed first into a small table of buckets x
-- verdicts (dropped at the end), which the PIVOT reads.
CREATE OR REPLACE TABLE loss_by_hour_counts AS
SELECT bucket, verdict,
       sum(n)::BIGINT AS events,
       coalesce(sum(n) FILTER (WHERE at_bus), 0)::BIGINT AS at_bus,
       coalesce(sum(n) FILTER (WHERE at_sink), 0)::BIGINT AS at_sink
FROM verdict_facts
WHERE expected
GROUP BY ALL;

CREATE OR REPLACE TABLE loss_by_hour AS
WITH n AS (
    SELECT bucket, sum(events)::BIGINT AS events, sum(at_bus)::BIGINT AS at_bus, sum(at_sink)::BIGINT AS at_sink
    FROM loss_by_hour_counts
    GROUP BY bucket
), p AS (
    PIVOT (SELECT bucket, verdict, events FROM loss_by_hour_counts)
    ON verdict IN (SELECT verdict FROM verdict_vocab ORDER BY ord) USING sum(events)::BIGINT GROUP BY bucket
)
SELECT n.bucket, n.events, n.at_bus, n.at_sink, coalesce(COLUMNS(p.* EXCLUDE (bucket)), 0)
FROM n
JOIN p USING (bucket)
ORDER BY bucket;

DROP TABLE loss_by_hour_counts;
