-- loss_by_type: per Zendesk event kind, expected bus events (a folded audit counts once) and their verdicts.
CREATE OR REPLACE TABLE loss_by_type AS
SELECT kind,
       count(*) AS events,
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
GROUP BY kind
ORDER BY events DESC, kind;
