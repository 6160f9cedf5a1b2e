-- silent_losses: losses no store reported (lost before the bus, lost after the bus with no DLQ message), per hour
-- of Zendesk event time and event kind: when and what went missing without a trace (`silent` in
-- queries/verdicts.csv; one column per silent verdict).
-- Summed by (hour, kind, verdict) from verdict_facts first and the vocabulary joined to the counts (verdict_counts.sql
-- says why).
CREATE OR REPLACE TABLE silent_losses AS
WITH counted AS (
    SELECT hour, kind, verdict, sum(n) AS n
    FROM verdict_facts
    WHERE expected
    GROUP BY ALL
)
SELECT c.hour,
       c.kind,
       sum(c.n)::BIGINT AS lost,
       coalesce(sum(c.n) FILTER (WHERE c.verdict = 'lost_before_bus'), 0)::BIGINT AS lost_before_bus,
       coalesce(sum(c.n) FILTER (WHERE c.verdict = 'lost_after_bus'), 0)::BIGINT AS lost_after_bus
FROM counted c
JOIN verdict_vocab v ON v.verdict = c.verdict AND v.silent
GROUP BY c.hour, c.kind
ORDER BY hour, lost DESC, kind;
