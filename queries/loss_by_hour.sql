-- loss_by_hour: per hour (or $bucket_s-second bucket) of Zendesk event time, expected bus events and their verdicts
-- (one column per verdict of the vocabulary, table verdict_vocab, in its order, zero when absent), plus how many
-- reached the bus log and the sink: the timeline that shows a spike and what it cost.
-- Two steps: a PIVOT whose columns come from a query cannot take parameters, so the bucketing (which needs
-- $window_start) first counts into a small table of buckets x verdicts, dropped at the end.
CREATE OR REPLACE TABLE loss_by_hour_counts AS
SELECT time_bucket(to_seconds($bucket_s), event_time, $window_start) AS bucket, verdict,
       count(*) AS events,
       count(*) FILTER (WHERE log_copies > 0) AS at_bus,
       count(*) FILTER (WHERE sink_rows > 0) AS at_sink
FROM verdicts
WHERE source_id = expected_id
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
