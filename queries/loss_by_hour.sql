-- loss_by_hour: per hour (or $bucket_s-second bucket) of Zendesk event time, expected bus events and their verdicts, plus how many
-- reached the bus log and the sink: the timeline that shows a spike and what it cost.
CREATE OR REPLACE TABLE loss_by_hour AS
SELECT time_bucket(to_seconds($bucket_s), event_time, $window_start) AS bucket,
       count(*) AS events,
       count(*) FILTER (WHERE log_copies > 0) AS at_bus,
       count(*) FILTER (WHERE sink_rows > 0) AS at_sink,
       count(*) FILTER (WHERE verdict = 'delivered') AS delivered,
       count(*) FILTER (WHERE verdict = 'duplicated') AS duplicated,
       count(*) FILTER (WHERE verdict = 'dead_lettered') AS dead_lettered,
       count(*) FILTER (WHERE verdict = 'lost_after_bus') AS lost_after_bus,
       count(*) FILTER (WHERE verdict = 'lost_before_bus') AS lost_before_bus,
       count(*) FILTER (WHERE verdict = 'pending') AS pending,
       count(*) FILTER (WHERE verdict = 'unverified') AS unverified,
       count(*) FILTER (WHERE verdict = 'not_emitted') AS not_emitted,
       count(*) FILTER (WHERE verdict = 'excluded') AS excluded,
       count(*) FILTER (WHERE verdict = 'recovered') AS recovered  -- recovery (issue 16)
FROM verdicts
WHERE source_id = expected_id
GROUP BY bucket
ORDER BY bucket;
